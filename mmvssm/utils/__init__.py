from .checkpoint import (atomic_save, extract_state_dict, load_checkpoint_file,
                         safe_mmengine_checkpoint_loading)
from .cpu_allocator import retain_freed_memory

__all__ = ['load_checkpoint_file', 'extract_state_dict', 'atomic_save',
           'safe_mmengine_checkpoint_loading', 'retain_freed_memory']

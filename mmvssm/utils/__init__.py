from .checkpoint import (atomic_save, extract_state_dict, load_checkpoint_file,
                         safe_mmengine_checkpoint_loading)

__all__ = ['load_checkpoint_file', 'extract_state_dict', 'atomic_save',
           'safe_mmengine_checkpoint_loading']

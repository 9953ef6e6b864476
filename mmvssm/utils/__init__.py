from .cpu_allocator import retain_freed_memory

__all__ = ['retain_freed_memory']

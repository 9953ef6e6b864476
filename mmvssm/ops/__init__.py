from .selective_scan import (auto_backend, available_backends, multi_direction_scan,
                             selective_scan, use_backend)

__all__ = ['selective_scan', 'multi_direction_scan', 'available_backends', 'auto_backend',
           'use_backend']

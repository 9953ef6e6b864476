from .selective_scan import (available_backends, multi_direction_scan,
                             selective_scan)

__all__ = ['selective_scan', 'multi_direction_scan', 'available_backends']

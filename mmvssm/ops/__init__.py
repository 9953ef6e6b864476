from .selective_scan import (auto_backend, available_backends, backend_plan, bidirectional_scan,
                             multi_direction_scan, selective_scan, use_backend)

__all__ = ['selective_scan', 'multi_direction_scan', 'bidirectional_scan', 'available_backends',
           'auto_backend', 'backend_plan', 'use_backend']

from .atrous import atrous_scan
from .conv1d import bidirectional_conv1d_silu
from .custom_ops import capturing
from .selective_scan import (auto_backend, available_backends, backend_for, backend_plan,
                             bidirectional_scan, multi_direction_scan, reads_backward_in_place,
                             selective_scan, use_backend)

__all__ = ['selective_scan', 'multi_direction_scan', 'bidirectional_scan', 'bidirectional_conv1d_silu',
           'atrous_scan', 'capturing', 'reads_backward_in_place', 'available_backends', 'auto_backend', 'backend_for',
           'backend_plan', 'use_backend']

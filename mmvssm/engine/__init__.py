# Optimizer constructors and hooks.
from .optimizers import LayerDecayOptimWrapperConstructor  # noqa: F401
from .wiring import NeckWiringCheckHook, NeckWiringError, check_neck_wiring  # noqa: F401

# Optimizer constructors and hooks.
from .optimizers import LayerDecayOptimWrapperConstructor  # noqa: F401

# One line per backbone module; importing it registers the class in mmengine's root MODELS.
from .vim import Vim  # noqa: F401
from .efficient_vmamba import EfficientVMamba  # noqa: F401
from .efficient_vim import EfficientViM  # noqa: F401

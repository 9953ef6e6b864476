# One line per neck module.
from .vim_pyramid import VimFeaturePyramid  # noqa: F401
from .efficient_vim_fpn import EfficientViMFPN  # noqa: F401

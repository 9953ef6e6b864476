# One line per head module (mmpretrain classification heads).
from .efficient_vim_head import EfficientViMFusionHead  # noqa: F401
from .vim_head import VimClsHead  # noqa: F401

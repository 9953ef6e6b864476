# Classification heads, subclasses of mmpretrain's ClsHead: imported (and registered) only when mmpretrain
# imports, so that the backbones work without it (see ..toolbox).
from ..toolbox import missing_attribute, toolbox_imports

if toolbox_imports('mmpretrain.models.heads', provides=('EfficientViMFusionHead', 'VimClsHead'),
                   fix='to build the classifiers, install mmpretrain==1.2.0 and '
                       '"transformers>=4.44,<4.50" (newer transformers break mmpretrain 1.2.0)'):
    # One line per head module.
    from .efficient_vim_head import EfficientViMFusionHead  # noqa: F401
    from .vim_head import VimClsHead  # noqa: F401

__getattr__ = missing_attribute(__name__)

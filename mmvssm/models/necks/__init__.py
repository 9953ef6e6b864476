# One line per neck module. EfficientViMFPN is built of mmcv's ConvModule: imported (and registered) only
# when mmcv imports, so that the backbones (Vim uses VimFeaturePyramid) work without it (see ..toolbox).
from ..toolbox import missing_attribute, toolbox_imports
from .vim_pyramid import VimFeaturePyramid  # noqa: F401
from .simple_feature_pyramid import LayerNorm2d, SimpleFeaturePyramid  # noqa: F401

if toolbox_imports('mmcv.cnn', provides=('EfficientViMFPN',),
                   fix='install mmcv 2.1.0 with `bash tools/install.sh` to build the EfficientViM detectors'):
    from .efficient_vim_fpn import EfficientViMFPN  # noqa: F401

__getattr__ = missing_attribute(__name__)

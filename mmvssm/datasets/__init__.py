"""Data checks that make bad samples fail at load time, naming the file (registered in mmengine's root
TRANSFORMS/HOOKS registries, so mmseg's and mmdet's pipelines and runners find them)."""
from .validation import ValidateBoxes, ValidateCocoAnnotations, ValidateImage, ValidateSegMap

__all__ = ['ValidateImage', 'ValidateSegMap', 'ValidateBoxes', 'ValidateCocoAnnotations']

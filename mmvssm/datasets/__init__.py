"""Data checks that make bad samples fail at load time, naming the file (registered in mmengine's root
TRANSFORMS/HOOKS registries, so mmseg's and mmdet's pipelines and runners find them)."""
from .validation import (DataError, ValidateBoxes, ValidateData, ValidateImage, ValidateSegMap,
                         add_pipeline_checks, check_coco_file)

__all__ = ['DataError', 'ValidateImage', 'ValidateSegMap', 'ValidateBoxes', 'ValidateData',
           'add_pipeline_checks', 'check_coco_file']

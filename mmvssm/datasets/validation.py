"""Checks of the data as it is loaded: a bad sample is an error naming its file, not a silent change.

Without them, mmseg drops out-of-range labels from mIoU, mmdet's ``CocoDataset`` skips boxes of zero or
negative size (the image then trains as background), and one NaN pixel gives an all-NaN prediction.

Pipeline transforms (after the loading transforms)::

    dict(type='ValidateImage')                                  # after LoadImageFromFile
    dict(type='ValidateSegMap', num_classes=150)                # after mmseg's LoadAnnotations
    dict(type='ValidateBoxes')                                  # after mmdet's LoadAnnotations

and for COCO-style annotation files (checked once per run, before the loop reads them)::

    custom_hooks = [dict(type='ValidateCocoAnnotations')]
"""
import json
import math
import os.path as osp
from typing import Dict, List, Optional

import numpy as np
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, TRANSFORMS


class DataError(ValueError):
    """A sample or annotation that cannot be trained or evaluated on as it is."""


class BaseTransform:
    """A pipeline step (mmcv's ``Compose`` calls any callable): ``transform(results) -> results``."""

    def __call__(self, results: dict) -> dict:
        return self.transform(results)

    def transform(self, results: dict) -> dict:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


def _where(results: dict, key: str) -> str:
    return results.get(key) or results.get('img_path') or '<in-memory sample>'


@TRANSFORMS.register_module()
class ValidateImage(BaseTransform):
    """Refuse an image with non-finite pixels (NaN/inf in float images) or no pixels at all."""

    def transform(self, results: dict) -> dict:
        img = results.get('img')
        if img is None:
            raise DataError('ValidateImage: no `img` in the sample; put it after LoadImageFromFile')
        if img.size == 0:
            raise DataError(f'{_where(results, "img_path")}: the image has no pixels (shape {img.shape})')
        if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
            bad = int((~np.isfinite(img)).sum())
            raise DataError(f'{_where(results, "img_path")}: {bad} non-finite pixel values (NaN/inf); '
                            f'repair or remove the image')
        return results


@TRANSFORMS.register_module()
class ValidateSegMap(BaseTransform):
    """Refuse a label map with values outside ``0..num_classes-1`` that are not ``ignore_index``.

    Put it after ``LoadAnnotations`` (so after ``reduce_zero_label``: ADE20K's 0 has become 255).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'ValidateSegMap: num_classes must be a positive int, got {num_classes!r}')
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def transform(self, results: dict) -> dict:
        seg = results.get('gt_seg_map')
        if seg is None:
            raise DataError('ValidateSegMap: no `gt_seg_map` in the sample; put it after LoadAnnotations')
        values = np.unique(seg)
        bad = values[((values < 0) | (values >= self.num_classes)) & (values != self.ignore_index)]
        if bad.size:
            raise DataError(
                f'{_where(results, "seg_map_path")}: label values {bad.tolist()[:10]} are outside '
                f'0..{self.num_classes - 1} and not ignore_index={self.ignore_index}; fix the label map, '
                f'or num_classes / reduce_zero_label of the config')
        return results


@TRANSFORMS.register_module()
class ValidateBoxes(BaseTransform):
    """Refuse non-finite boxes and boxes of zero or negative width/height (``gt_bboxes``, x1y1x2y2)."""

    def transform(self, results: dict) -> dict:
        boxes = results.get('gt_bboxes')
        if boxes is None:
            raise DataError('ValidateBoxes: no `gt_bboxes` in the sample; put it after LoadAnnotations')
        array = np.asarray(boxes.tensor if hasattr(boxes, 'tensor') else boxes, dtype=np.float64)
        array = array.reshape(-1, 4)
        bad = [i for i, (x1, y1, x2, y2) in enumerate(array)
               if not np.isfinite([x1, y1, x2, y2]).all() or x2 <= x1 or y2 <= y1]
        if bad:
            raise DataError(f'{_where(results, "img_path")}: boxes {bad[:10]} are degenerate or not '
                            f'finite (x1y1x2y2 {array[bad[0]].tolist()}); fix the annotation')
        return results


def check_coco_file(path: str) -> None:
    """Refuse a COCO annotation file with degenerate, negative or non-finite boxes or unknown categories
    (mmdet's ``CocoDataset`` would skip those boxes silently); the message names the file and the
    annotation id."""
    with open(path) as f:
        data = json.load(f)
    categories = {c['id'] for c in data.get('categories', [])}
    images = {im['id']: im.get('file_name', im['id']) for im in data.get('images', [])}
    problems: List[str] = []
    for ann in data.get('annotations', []):
        box = ann.get('bbox')
        where = f"annotation id {ann.get('id')} (image {images.get(ann.get('image_id'), ann.get('image_id'))})"
        if not isinstance(box, list) or len(box) != 4 or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in box):
            problems.append(f'{where}: bbox {box!r} is not 4 finite numbers')
        elif box[2] <= 0 or box[3] <= 0:
            problems.append(f'{where}: bbox {box} has width/height <= 0')
        if categories and ann.get('category_id') not in categories:
            problems.append(f"{where}: category_id {ann.get('category_id')} is not in `categories`")
    if problems:
        raise DataError(f'{path}: {len(problems)} bad annotation(s), which mmdet would skip silently: '
                        + '; '.join(problems[:5]) + ('; ...' if len(problems) > 5 else '')
                        + '. Fix or remove them')


def _leaf_datasets(dataset) -> list:
    for attr in ('dataset', 'datasets'):
        inner = getattr(dataset, attr, None)
        if inner is not None:
            return [leaf for d in (inner if isinstance(inner, (list, tuple)) else [inner])
                    for leaf in _leaf_datasets(d)]
    return [dataset]


@HOOKS.register_module()
class ValidateCocoAnnotations(Hook):
    """Check each COCO annotation file of the run's datasets (:func:`check_coco_file`) once."""

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._checked: Dict[str, None] = {}

    def _check(self, dataloader) -> None:
        for dataset in _leaf_datasets(dataloader.dataset):
            path: Optional[str] = getattr(dataset, 'ann_file', None)
            if path and path.endswith('.json') and osp.isfile(path) and path not in self._checked:
                check_coco_file(path)
                self._checked[path] = None

    def before_train(self, runner) -> None:
        self._check(runner.train_dataloader)

    def before_val(self, runner) -> None:
        self._check(runner.val_dataloader)

    def before_test(self, runner) -> None:
        self._check(runner.test_dataloader)

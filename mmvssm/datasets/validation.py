"""Checks of the data as it is loaded: a bad sample is an error naming its file, not a silent change.

Without them, mmseg drops out-of-range labels from mIoU, mmdet's ``CocoDataset`` skips boxes of zero or
negative size (the image then trains as background), and one NaN pixel gives an all-NaN prediction.

Every segmentation/detection config of mmvssm runs them through one hook (our runtime bases and the
plug-in examples list it; a config of your own adds it the same way)::

    custom_hooks = [dict(type='ValidateData')]

Before training, validation and testing, :class:`ValidateData` puts the pipeline checks into each
dataset of the run's dataloaders (through ConcatDataset/RepeatDataset and other wrappers), right after
the loading transforms, and checks each COCO annotation file once (:func:`check_coco_file`):

* :class:`ValidateImage` after ``LoadImageFromFile``: no pixels, or non-finite pixels (float images);
* :class:`ValidateSegMap` after mmseg's ``LoadAnnotations``: labels outside ``0..num_classes-1`` that are
  not the dataset's ``ignore_index`` (``num_classes`` = the dataset's ``metainfo['classes']``);
* :class:`ValidateBoxes` after ``LoadAnnotations(with_bbox=True)``: degenerate or non-finite boxes.

The transforms can also be written into a pipeline by hand; the hook then does not add them twice.
"""
import json
import math
import os.path as osp
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from mmengine.dist import broadcast_object_list, get_rank, get_world_size
from mmengine.fileio import get_local_path
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


def _where(results: dict, *keys: str) -> str:
    for key in keys + ('img_path',):
        if results.get(key):
            return str(results[key])
    return '<in-memory sample>'


@TRANSFORMS.register_module()
class ValidateImage(BaseTransform):
    """Refuse an image with non-finite pixels (NaN/inf in float images) or no pixels at all."""

    def transform(self, results: dict) -> dict:
        img = results.get('img')
        if img is None:
            raise DataError('ValidateImage: no `img` in the sample; put it after LoadImageFromFile')
        if img.size == 0:
            raise DataError(f'{_where(results)}: the image has no pixels (shape {img.shape})')
        if np.issubdtype(img.dtype, np.floating) and not np.isfinite(img).all():
            bad = int((~np.isfinite(img)).sum())
            raise DataError(f'{_where(results)}: {bad} non-finite pixel values (NaN/inf); '
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

    def __repr__(self) -> str:
        return f'{type(self).__name__}(num_classes={self.num_classes}, ignore_index={self.ignore_index})'

    def transform(self, results: dict) -> dict:
        seg = results.get('gt_seg_map')
        if seg is None:
            raise DataError('ValidateSegMap: no `gt_seg_map` in the sample; put it after LoadAnnotations')
        seg = np.asarray(seg)
        outside = ((seg < 0) | (seg >= self.num_classes)) & (seg != self.ignore_index)
        if outside.any():  # two vectorised passes; the values are listed only for the error
            bad = np.unique(seg[outside])
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
        with np.errstate(invalid='ignore'):
            bad_rows = (~np.isfinite(array).all(axis=1) | (array[:, 2] <= array[:, 0])
                        | (array[:, 3] <= array[:, 1]))
        bad = np.flatnonzero(bad_rows).tolist()
        if bad:
            raise DataError(f'{_where(results, "xml_path", "ann_path")}: boxes {bad[:10]} are degenerate or '
                            f'not finite (x1y1x2y2 {array[bad[0]].tolist()}); fix the annotation')
        return results


# Degenerate annotations of the official COCO 2017 files: two boxes of height 0 (area 0) in
# instances_train2017.json (cocodataset/cocoapi#355), which mmdet's CocoDataset skips, as every published
# COCO training did. Accepted, and logged, only in a file of that name and only with those ids.
KNOWN_COCO_DEFECTS: Dict[str, Tuple[int, ...]] = {'instances_train2017.json': (918, 2206849)}


def check_coco_file(path: str, accept: Iterable[int] = ()) -> List[str]:
    """Refuse a COCO annotation file with degenerate, negative or non-finite boxes or unknown categories
    (mmdet's ``CocoDataset`` would skip those boxes silently); the message names the file and the
    annotation ids. Annotations whose id is in ``accept`` are not errors: they are returned, described,
    for the caller to log (mmdet skips them)."""
    with open(path) as f:
        data = json.load(f)
    accepted_ids = set(accept)
    categories = {c['id'] for c in data.get('categories', [])}
    images = {im['id']: im.get('file_name', im['id']) for im in data.get('images', [])}
    problems: List[str] = []
    accepted: List[str] = []
    for ann in data.get('annotations', []):
        box = ann.get('bbox')
        image = images.get(ann.get('image_id'), ann.get('image_id'))
        where = f"annotation id {ann.get('id')} (image {image})"
        found = []
        if not isinstance(box, list) or len(box) != 4 or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in box):
            found.append(f'{where}: bbox {box!r} is not 4 finite numbers')
        elif box[2] <= 0 or box[3] <= 0:
            found.append(f'{where}: bbox {box} has width/height <= 0')
        if categories and ann.get('category_id') not in categories:
            found.append(f"{where}: category_id {ann.get('category_id')} is not in `categories`")
        (accepted if ann.get('id') in accepted_ids else problems).extend(found)
    if problems:
        raise DataError(
            f'{path}: {len(problems)} bad annotation(s), which mmdet would skip silently: '
            + '; '.join(problems[:5]) + ('; ...' if len(problems) > 5 else '')
            + '. Fix or remove them; or, to train with mmdet skipping them, list their ids in '
            f"custom_hooks=[dict(type='ValidateData', accept_annotations={{'{osp.basename(path)}': [ids]}})]")
    return accepted


def _leaf_datasets(dataset: Any) -> List[Any]:
    for attr in ('dataset', 'datasets'):
        inner = getattr(dataset, attr, None)
        if inner is not None:
            return [leaf for d in (inner if isinstance(inner, (list, tuple)) else [inner])
                    for leaf in _leaf_datasets(d)]
    return [dataset]


def _class_of(module: str, name: str) -> Optional[type]:
    """``module.name`` if that toolbox is installed (mmcv, mmseg, mmdet are optional for mmvssm)."""
    try:
        return getattr(__import__(module, fromlist=[name]), name)
    except ImportError:
        return None


def _is_instance(obj: Any, cls: Optional[type]) -> bool:
    return cls is not None and isinstance(obj, cls)


def _pipelines_of(transforms: List[Any]) -> List[List[Any]]:
    """The transform lists to check: the pipeline's own, and the first branch of a ``TestTimeAug`` (every
    branch loads the same files, the first is enough)."""
    lists = [transforms]
    for t in transforms:
        branches = getattr(t, 'subroutines', None)
        if branches and isinstance(getattr(branches[0], 'transforms', None), list):
            lists.append(branches[0].transforms)
    return lists


def _insert_after(transforms: List[Any], loader_index: Optional[int], check: Any) -> bool:
    """Insert ``check`` after ``transforms[loader_index]`` unless a check of its type is already there."""
    if loader_index is None or any(type(t) is type(check) for t in transforms):
        return False
    transforms.insert(loader_index + 1, check)
    return True


def add_pipeline_checks(dataset: Any) -> List[str]:
    """Insert :class:`ValidateImage`, :class:`ValidateSegMap` and :class:`ValidateBoxes` into the pipeline
    of ``dataset`` (a leaf dataset, not a wrapper) after its loading transforms; idempotent.

    Returns one line per check that does not apply or cannot be placed, for the caller to log."""
    name = type(dataset).__name__
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None)
    if not isinstance(transforms, list):
        return [f'{name} has no pipeline with a list of transforms: no image, label or box checks']
    load_annotations = _class_of('mmcv.transforms', 'LoadAnnotations')
    seg_dataset = _class_of('mmseg.datasets', 'BaseSegDataset')
    skipped: List[str] = []
    seen_image = seen_annotations = False
    for steps in _pipelines_of(transforms):
        image_at = next((k for k, t in enumerate(steps) if type(t).__name__.startswith('Load')
                         and 'Image' in type(t).__name__), None)
        seen_image |= _insert_after(steps, image_at, ValidateImage()) or image_at is not None
        annotations_at = next((k for k, t in enumerate(steps) if _is_instance(t, load_annotations)), None)
        if annotations_at is None:
            continue
        seen_annotations = True
        loader = steps[annotations_at]
        if getattr(loader, 'with_seg', False):
            if _is_instance(dataset, seg_dataset):
                num_classes = len(dataset.metainfo['classes'])
                _insert_after(steps, annotations_at,
                              ValidateSegMap(num_classes, getattr(dataset, 'ignore_index', 255)))
            else:
                skipped.append(f'{name}: its label maps are not checked (ValidateSegMap needs an mmseg '
                               f'dataset for num_classes and ignore_index)')
        if getattr(loader, 'with_bbox', False):
            _insert_after(steps, annotations_at, ValidateBoxes())
    if not seen_image:
        skipped.append(f'{name}: no Load*Image* transform in its pipeline, pixels not checked')
    if not seen_annotations:
        skipped.append(f'{name}: no LoadAnnotations in its pipeline, labels/boxes not checked')
    return skipped


def _restart_started_workers(loop: Any) -> int:
    """Restart the data-loading worker processes that ``loop`` started before the hooks ran (mmengine's
    ``IterBasedTrainLoop`` opens its dataloader when it is built): they hold copies of the dataset made
    before the checks were inserted. Returns the number of workers restarted."""
    loader = getattr(loop, 'dataloader', None)
    infinite = getattr(loop, 'dataloader_iterator', None)
    started = getattr(infinite, '_iterator', None) or getattr(loader, '_iterator', None)
    if started is None or not hasattr(started, '_shutdown_workers'):
        return 0  # no worker processes (num_workers=0 loads in this process) or none started yet
    started._shutdown_workers()
    if getattr(loader, '_iterator', None) is started:  # persistent workers: the loader keeps them
        loader._iterator = None
    # mmengine's InfiniteSampler iterates one generator made at its construction: rewind it (the old
    # iterator's prefetched indices are dropped with it), so the run sees the order an unchecked one would
    batch_sampler = getattr(loader, 'batch_sampler', None)
    for sampler in (getattr(loader, 'sampler', None), batch_sampler, getattr(batch_sampler, 'sampler', None)):
        if hasattr(sampler, 'indices') and callable(getattr(sampler, '_indices_of_rank', None)):
            sampler.indices = sampler._indices_of_rank()
    if infinite is not None:
        loop.dataloader_iterator = type(infinite)(loader)
    return loader.num_workers


@HOOKS.register_module()
class ValidateData(Hook):
    """Makes bad data an error naming its file in every run: ``custom_hooks = [dict(type='ValidateData')]``.

    Before training (for the training and validation dataloaders), validation and testing, it inserts
    :class:`ValidateImage`, :class:`ValidateSegMap` and :class:`ValidateBoxes` into the pipeline of each
    dataset after its loading transforms (see :func:`add_pipeline_checks`; checks that do not apply are
    logged), restarts data-loading workers started before it ran, and checks each COCO annotation file
    of an mmdet ``CocoDataset`` once (:func:`check_coco_file`; in distributed runs, on rank 0).

    Args:
        accept_annotations: COCO annotation ids to accept although they are bad, per annotation file name
            (``{'instances_train2017.json': [918]}``): mmdet skips them, the hook logs them. The known
            defects of the official COCO 2017 files (:data:`KNOWN_COCO_DEFECTS`) are always accepted.
    """

    priority = 'VERY_HIGH'

    def __init__(self, accept_annotations: Optional[Dict[str, Sequence[int]]] = None) -> None:
        self.accept: Dict[str, Tuple[int, ...]] = dict(KNOWN_COCO_DEFECTS)
        for file_name, ids in (accept_annotations or {}).items():
            self.accept[file_name] = tuple(self.accept.get(file_name, ())) + tuple(ids)
        self._checked_files: Dict[str, None] = {}
        self._prepared: Dict[int, Any] = {}  # id -> dataset (kept alive, so ids are not reused)

    def prepare(self, loop: Any, logger: Any) -> None:
        """Checks for the dataset of ``loop.dataloader`` (a training/validation/test loop); idempotent."""
        loader = getattr(loop, 'dataloader', None)
        if loader is None:
            logger.warning(f'ValidateData: {type(loop).__name__} has no dataloader; its data is not checked')
            return
        fresh = False
        for dataset in _leaf_datasets(loader.dataset):
            if id(dataset) in self._prepared:
                continue
            self._prepared[id(dataset)] = dataset
            fresh = True
            for line in add_pipeline_checks(dataset):
                logger.warning(f'ValidateData: {line}')
            self._check_annotation_file(dataset, logger)
            checks = [repr(t) for t in getattr(getattr(dataset, 'pipeline', None), 'transforms', [])
                      if type(t) in (ValidateImage, ValidateSegMap, ValidateBoxes)]
            root = getattr(dataset, 'data_root', '') or ''
            logger.info(f'ValidateData: {type(dataset).__name__} ({root}) loads through '
                        f'{", ".join(checks) or "no checks"}')
        if fresh:
            restarted = _restart_started_workers(loop)
            if restarted:
                logger.info(f'ValidateData: restarted the {restarted} data-loading workers that '
                            f'{type(loop).__name__} had started, so that they load through the checks')

    def _check_annotation_file(self, dataset: Any, logger: Any) -> None:
        path = getattr(dataset, 'ann_file', None)
        if not isinstance(path, str) or not path.endswith('.json') or path in self._checked_files:
            return
        if not _is_instance(dataset, _class_of('mmdet.datasets', 'CocoDataset')):
            logger.warning(f'ValidateData: {path} is not read by an mmdet CocoDataset '
                           f'({type(dataset).__name__}); its annotations are not checked')
            self._checked_files[path] = None
            return
        outcome: List[Any] = [None]
        if get_rank() == 0:
            try:
                with get_local_path(path, backend_args=getattr(dataset, 'backend_args', None)) as local:
                    outcome = [check_coco_file(local, self.accept.get(osp.basename(path), ()))]
            except Exception as error:  # every rank raises it, none waits for rank 0 in vain
                outcome = [error]
        if get_world_size() > 1:
            broadcast_object_list(outcome)
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        self._checked_files[path] = None
        for line in outcome[0]:
            logger.warning(f'ValidateData: {path}: accepted (accept_annotations / known COCO defect; '
                           f'mmdet skips it): {line}')

    def before_train(self, runner) -> None:
        self.prepare(runner.train_loop, runner.logger)
        if runner.val_loop is not None:  # built by Runner.train(): its files are checked before training
            self.prepare(runner.val_loop, runner.logger)

    def before_val(self, runner) -> None:
        self.prepare(runner.val_loop, runner.logger)

    def before_test(self, runner) -> None:
        self.prepare(runner.test_loop, runner.logger)

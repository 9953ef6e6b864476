"""Generate a tiny ADE20K-format and COCO-format sample of coloured shapes, deterministically.

The files use the real layouts, so mmseg's ``ADE20KDataset`` and mmdet's ``CocoDataset`` read them
unchanged::

    OUT/ade/images/{training,validation}/*.jpg
    OUT/ade/annotations/{training,validation}/*.png   raw labels: 0 = ignore, k = ADE20K class k-1
    OUT/coco/{train2017,val2017}/*.jpg
    OUT/coco/annotations/instances_{train,val}2017.json   polygons, compressed RLE, crowd (uncompressed RLE)

Every class has its own shape and colour and every mask is exact (the image is painted through the very
mask that is written), so a small model learns the sample within minutes on a CPU.

The same arguments give the same bytes. Each part is written to a temporary folder and renamed into
place, so an interrupted run never leaves a half-written dataset; a finished part whose recorded
arguments match is left as it is.

Usage::

    python tools/misc/make_tiny_datasets.py [--out data/tiny] [--num-train 32] [--num-val 8] [--size 128]
"""
import argparse
import io
import json
import os
import os.path as osp
import re
import shutil
import sys
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

FORMAT_VERSION = 2
STAMP = '.tiny_dataset.json'  # records the arguments a finished part was generated with

# ADE20K raw label (1-based; mmseg subtracts 1 with reduce_zero_label) -> (name, colour, shape).
ADE_BACKGROUND = (1, 'wall', (120, 120, 120))
ADE_FLOOR = (4, 'floor', (80, 50, 50))
ADE_SHAPES = [
    (5, 'tree', (4, 200, 3), 'triangle'),
    (13, 'person', (220, 20, 60), 'rectangle'),
    (21, 'car', (0, 102, 200), 'circle'),
    (23, 'painting', (255, 200, 0), 'ellipse'),
]
# The 80 COCO 2017 categories as instances_*.json lists them ("id:name", grouped by supercategory):
# evaluation maps mmdet's 80 class indices onto these ids, so all of them must be present.
COCO_ALL_CATEGORIES = {
    'person': '1:person',
    'vehicle': '2:bicycle 3:car 4:motorcycle 5:airplane 6:bus 7:train 8:truck 9:boat',
    'outdoor': '10:traffic light 11:fire hydrant 13:stop sign 14:parking meter 15:bench',
    'animal': '16:bird 17:cat 18:dog 19:horse 20:sheep 21:cow 22:elephant 23:bear 24:zebra 25:giraffe',
    'accessory': '27:backpack 28:umbrella 31:handbag 32:tie 33:suitcase',
    'sports': '34:frisbee 35:skis 36:snowboard 37:sports ball 38:kite 39:baseball bat '
              '40:baseball glove 41:skateboard 42:surfboard 43:tennis racket',
    'kitchen': '44:bottle 46:wine glass 47:cup 48:fork 49:knife 50:spoon 51:bowl',
    'food': '52:banana 53:apple 54:sandwich 55:orange 56:broccoli 57:carrot 58:hot dog 59:pizza '
            '60:donut 61:cake',
    'furniture': '62:chair 63:couch 64:potted plant 65:bed 67:dining table 70:toilet',
    'electronic': '72:tv 73:laptop 74:mouse 75:remote 76:keyboard 77:cell phone',
    'appliance': '78:microwave 79:oven 80:toaster 81:sink 82:refrigerator',
    'indoor': '84:book 85:clock 86:vase 87:scissors 88:teddy bear 89:hair drier 90:toothbrush',
}
# The categories drawn in the sample (real COCO ids): one shape and colour each.
COCO_CATEGORIES = [
    (1, (220, 20, 60), 'rectangle'),    # person
    (3, (0, 102, 200), 'circle'),       # car
    (18, (4, 200, 3), 'triangle'),      # dog
    (44, (255, 200, 0), 'ellipse'),     # bottle
]


def coco_categories() -> List[dict]:
    """The ``categories`` list of a COCO 2017 annotation file."""
    cats = []
    for supercategory, entries in COCO_ALL_CATEGORIES.items():
        for entry in re.findall(r'(\d+):([a-z ]+?)(?= \d+:|$)', entries):
            cats.append(dict(id=int(entry[0]), name=entry[1], supercategory=supercategory))
    return sorted(cats, key=lambda c: c['id'])


def _polygon(shape: str, box: Tuple[float, float, float, float]) -> List[float]:
    """Outline of ``shape`` inside ``box`` (x0, y0, x1, y1) as a flat COCO polygon [x, y, x, y, ...]."""
    x0, y0, x1, y1 = box
    if shape == 'rectangle':
        pts = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    elif shape == 'triangle':
        pts = [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
    else:  # circle / ellipse: 24-gon, fine enough at these sizes
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = [(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in angles]
    return [round(float(v), 2) for p in pts for v in p]


def _rasterize(polygon: List[float], height: int, width: int) -> np.ndarray:
    """The mask pycocotools (and so mmdet and the COCO evaluation) derive from ``polygon``."""
    from pycocotools import mask as mask_utils
    rles = mask_utils.frPyObjects([polygon], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _place_boxes(rng: np.random.RandomState, size: int, count: int) -> List[Tuple[int, int, int, int]]:
    """Up to ``count`` non-overlapping boxes (with a margin), so every mask stays exact and whole."""
    boxes: List[Tuple[int, int, int, int]] = []
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        w, h = rng.randint(size // 5, size // 2, size=2)
        x0, y0 = rng.randint(1, size - w - 1), rng.randint(1, size - h - 1)
        box = (x0, y0, x0 + w, y0 + h)
        if all(box[2] + 2 < b[0] or b[2] + 2 < box[0] or box[3] + 2 < b[1] or b[3] + 2 < box[1]
               for b in boxes):
            boxes.append(box)
    return boxes


def _jpeg_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format='JPEG', quality=95)
    return buf.getvalue()


def _png_bytes(label: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(label.astype(np.uint8), mode='L').save(buf, format='PNG')
    return buf.getvalue()


def _background(rng: np.random.RandomState, size: int, colour: Sequence[int]) -> np.ndarray:
    noise = rng.randint(-12, 13, size=(size, size, 3))
    return np.clip(np.asarray(colour)[None, None] + noise, 0, 255).astype(np.uint8)


def _write(path: str, data: bytes) -> None:
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


def make_ade(root: str, num_train: int, num_val: int, size: int, seed: int) -> None:
    """ADE20K layout: wall background, a floor band, 1-3 shapes; a 2-pixel ignore (0) border."""
    for split, count, offset in (('training', num_train, 0), ('validation', num_val, 100000)):
        rng = np.random.RandomState(seed + offset)
        for i in range(count):
            img = _background(rng, size, ADE_BACKGROUND[2])
            label = np.full((size, size), ADE_BACKGROUND[0], np.uint8)
            floor = rng.randint(size * 3 // 4, size - 4)
            img[floor:] = _background(rng, size, ADE_FLOOR[2])[floor:]
            label[floor:] = ADE_FLOOR[0]
            for box in _place_boxes(rng, size, rng.randint(1, 4)):
                raw, _, colour, shape = ADE_SHAPES[rng.randint(len(ADE_SHAPES))]
                mask = _rasterize(_polygon(shape, box), size, size)
                img[mask] = colour
                label[mask] = raw
            label[:2], label[-2:], label[:, :2], label[:, -2:] = 0, 0, 0, 0
            name = f'ADE_{"train" if split == "training" else "val"}_{i + 1:08d}'
            _write(osp.join(root, 'images', split, name + '.jpg'), _jpeg_bytes(img))
            _write(osp.join(root, 'annotations', split, name + '.png'), _png_bytes(label))


def _coco_split(rng: np.random.RandomState, count: int, size: int, first_image_id: int,
                file_prefix: str) -> Tuple[Dict[str, bytes], dict]:
    from pycocotools import mask as mask_utils
    files: Dict[str, bytes] = {}
    images, annotations = [], []
    ann_id = first_image_id * 100
    for i in range(count):
        image_id = first_image_id + i
        file_name = f'{image_id:012d}.jpg'
        img = _background(rng, size, (70, 110, 90))
        for k, box in enumerate(_place_boxes(rng, size, rng.randint(1, 5))):
            cat_id, colour, shape = COCO_CATEGORIES[rng.randint(len(COCO_CATEGORIES))]
            polygon = _polygon(shape, box)
            mask = _rasterize(polygon, size, size)
            img[mask] = colour
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            ann = dict(id=ann_id, image_id=image_id, category_id=cat_id, iscrowd=0,
                       area=float(mask_utils.area(rle)),
                       bbox=[round(float(v), 2) for v in mask_utils.toBbox(rle)])
            # Mix the encodings real COCO files contain: polygons, compressed RLE, and crowd regions
            # stored as uncompressed RLE (ignored for training, "crowd" for the evaluation).
            if k == 3:
                ann['iscrowd'] = 1
                ann['segmentation'] = dict(size=[size, size], counts=_uncompressed_counts(mask))
            elif (image_id + k) % 3 == 0:
                ann['segmentation'] = dict(size=[size, size], counts=rle['counts'].decode('ascii'))
            else:
                ann['segmentation'] = [polygon]
            annotations.append(ann)
            ann_id += 1
        files[f'{file_prefix}/{file_name}'] = _jpeg_bytes(img)
        images.append(dict(id=image_id, file_name=file_name, height=size, width=size))
    return files, dict(info=dict(description='mmvssm tiny COCO-format sample', version='1.0'),
                       licenses=[], images=images, annotations=annotations, categories=coco_categories())


def _uncompressed_counts(mask: np.ndarray) -> List[int]:
    """COCO's uncompressed RLE: run lengths of the column-major mask, starting with a run of zeros."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    return ([0] + counts) if flat[0] == 1 else counts


def make_coco(root: str, num_train: int, num_val: int, size: int, seed: int) -> None:
    for split, count, first_id in (('train2017', num_train, 1), ('val2017', num_val, 100001)):
        rng = np.random.RandomState(seed + first_id)
        files, ann = _coco_split(rng, count, size, first_id, split)
        for rel, data in files.items():
            _write(osp.join(root, rel), data)
        text = json.dumps(ann, sort_keys=True).encode()
        _write(osp.join(root, 'annotations', f'instances_{split}.json'), text)


def _replace_dir(new: str, target: str) -> None:
    """Move the finished ``new`` folder onto ``target``; a reader sees the old or the new, never half."""
    old = None
    if osp.exists(target):
        old = tempfile.mkdtemp(prefix='.old-', dir=osp.dirname(target))
        os.rename(target, osp.join(old, 'data'))
    os.rename(new, target)
    if old:
        shutil.rmtree(old)


def generate(out: str, num_train: int = 32, num_val: int = 8, size: int = 128, seed: int = 0,
             parts: Sequence[str] = ('ade', 'coco')) -> Dict[str, str]:
    """Generate the sample parts under ``out``; returns the folder of each part."""
    if size < 32:
        raise ValueError(f'--size must be at least 32 pixels (the COCO configs drop smaller images), '
                         f'got {size}')
    if num_train < 1 or num_val < 1:
        raise ValueError(f'--num-train and --num-val must be >= 1, got {num_train} and {num_val}')
    makers = dict(ade=make_ade, coco=make_coco)
    unknown = set(parts) - set(makers)
    if unknown:
        raise ValueError(f'unknown parts {sorted(unknown)}; choose from {sorted(makers)}')
    os.makedirs(out, exist_ok=True)
    params = dict(version=FORMAT_VERSION, num_train=num_train, num_val=num_val, size=size, seed=seed)
    result = {}
    for part in parts:
        target = osp.join(out, part)
        result[part] = target
        stamp = osp.join(target, STAMP)
        if osp.isfile(stamp):
            with open(stamp) as f:
                if json.load(f) == params:
                    continue
        tmp = tempfile.mkdtemp(prefix=f'.{part}-', dir=out)
        try:
            makers[part](tmp, num_train, num_val, size, seed)
            _write(osp.join(tmp, STAMP), json.dumps(params, sort_keys=True).encode())
            _replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return result


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/tiny', help='output folder (default: data/tiny)')
    parser.add_argument('--num-train', type=int, default=32, help='training images per part')
    parser.add_argument('--num-val', type=int, default=8, help='validation images per part')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--parts', nargs='+', default=['ade', 'coco'], choices=['ade', 'coco'])
    return parser.parse_args(argv)


def main(argv: Sequence[str] = None) -> None:
    args = parse_args(argv)
    try:
        folders = generate(args.out, args.num_train, args.num_val, args.size, args.seed, args.parts)
    except ValueError as err:
        sys.exit(f'make_tiny_datasets: {err}')
    for part, folder in folders.items():
        print(f'{part}: {folder}')


if __name__ == '__main__':
    main()

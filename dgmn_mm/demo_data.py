"""The demo-data generator: small synthetic datasets that need no download, shapes on textured backgrounds.

:func:`make_demo_data` writes, deterministically from a seed (numpy + PIL only)::

    <out>/coco/{train,val}/000000.png ...                 96 x 96 RGB, 2-4 shapes each
    <out>/coco/annotations/instances_{train,val}.json      COCO instances: boxes, RLE masks, areas, iscrowd=0
    <out>/cityscapes/leftImg8bit/{train,val}/demo/demo_000000_000019_leftImg8bit.png   256 x 128
    <out>/cityscapes/gtFine/{train,val}/demo/demo_000000_000019_gtFine_labelTrainIds.png
    <out>/imagenet/{train,val}/<class>/<class>_0000.png    64 x 64, one shape each
    <out>/demo_data.json                                   what was written (the "done" marker)

The object classes are shapes - ``circle``, ``square``, ``triangle``, ``star`` - drawn in one of six
colours that are independent of the class (so the class is the shape, not the colour), at a random size
and rotation, on a muted background texture (noise, stripes or a gradient). Objects never overlap, so every
instance mask is exactly the set of pixels painted for it; it is stored as an uncompressed COCO RLE
(``{'size': [h, w], 'counts': [...]}``, column-major runs starting with background), which pycocotools and
mmdet's ``LoadAnnotations`` both read. Boxes are ``[x, y, w, h]`` tight around the mask pixels and
``area`` is the mask's pixel count.

The Cityscapes-style label maps use the 19 Cityscapes train ids: sky (10) above, building (2) in the
middle, road (0) below, and the shapes as traffic sign (7, circle), car (13, square), traffic light
(6, triangle) and person (11, star), so mmseg's ``CityscapesDataset`` reads them unchanged.
"""
import json
import math
import os
import os.path as osp
import shutil
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['SHAPES', 'COLOURS', 'CITYSCAPES_SHAPE_IDS', 'CITYSCAPES_BACKGROUND_IDS', 'DEFAULT_SIZES',
           'shape_polygon', 'polygon_area', 'textured_background', 'draw_scene', 'mask_to_rle',
           'rle_to_mask', 'make_coco', 'make_cityscapes', 'make_imagenet', 'make_demo_data']

FORMAT_VERSION = 1
SHAPES = ('circle', 'square', 'triangle', 'star')
COLOURS = {
    'red': (225, 45, 45),
    'green': (40, 190, 70),
    'blue': (45, 95, 230),
    'yellow': (240, 210, 35),
    'magenta': (215, 50, 215),
    'white': (245, 245, 245),
}
# Cityscapes train ids (mmseg's CityscapesDataset order): 0 road, 2 building, 6 traffic light,
# 7 traffic sign, 10 sky, 11 person, 13 car.
CITYSCAPES_SHAPE_IDS = {'circle': 7, 'square': 13, 'triangle': 6, 'star': 11}
CITYSCAPES_BACKGROUND_IDS = {'sky': 10, 'building': 2, 'road': 0}

DEFAULT_SIZES = dict(
    coco_train=400, coco_val=64, coco_size=96,
    cityscapes_train=32, cityscapes_val=8,
    imagenet_train=40, imagenet_val=10, imagenet_size=64,  # per class
)


# --------------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------------
def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float = 0.) -> np.ndarray:
    """Vertices (N, 2) as (x, y) of a shape with circumradius ``r`` centred at (cx, cy), rotated by
    ``angle`` radians. A circle is a 64-gon."""
    if shape == 'circle':
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        rad = np.full_like(t, r)
    elif shape == 'square':
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        rad = np.full_like(t, r)
    elif shape == 'triangle':
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        rad = np.full_like(t, r)
    elif shape == 'star':
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    else:
        raise ValueError(f'unknown shape {shape!r}; choose from {SHAPES}')
    t = t + angle
    return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], axis=1)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon (N, 2)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _rasterize(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    img = Image.new('L', (w, h), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in poly], fill=1)
    return np.asarray(img, dtype=np.uint8)


# --------------------------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------------------------
def _muted(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation colour, so that the shapes stand out from every background."""
    grey = rng.uniform(70, 170)
    return np.clip(grey + rng.uniform(-25, 25, size=3), 0, 255)


def textured_background(rng: np.random.Generator, h: int, w: int, kind: Optional[str] = None) -> np.ndarray:
    """(h, w, 3) float32 texture: 'noise' (smoothed blobs), 'stripes' (oriented sine) or 'gradient'."""
    kind = kind or ('noise', 'stripes', 'gradient')[int(rng.integers(3))]
    c0, c1 = _muted(rng), _muted(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 'noise':
        cell = int(rng.integers(4, 12))
        coarse = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
        t = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize(
            (w + 2 * cell, h + 2 * cell), Image.BILINEAR), dtype=np.float32)[cell:cell + h, cell:cell + w] / 255
    elif kind == 'stripes':
        theta = rng.uniform(0, np.pi)
        period = rng.uniform(6, 20)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    elif kind == 'gradient':
        theta = rng.uniform(0, 2 * np.pi)
        proj = xx * np.cos(theta) + yy * np.sin(theta)
        t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    else:
        raise ValueError(f'unknown background {kind!r}')
    img = c0 + (c1 - c0) * t[..., None]
    img += rng.normal(0, 6, size=(h, w, 1)).astype(np.float32)  # a little grain
    return img.astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Scenes
# --------------------------------------------------------------------------------------------------------
def _place(rng: np.random.Generator, h: int, w: int, num: int, r_range: Tuple[float, float],
           y_range: Optional[Tuple[float, float]] = None, max_tries: int = 100) -> List[Tuple[float, float, float]]:
    """Up to ``num`` non-overlapping discs (cx, cy, r) fully inside the image (2 px margin)."""
    discs = []
    for _ in range(num):
        for _ in range(max_tries):
            r = rng.uniform(*r_range)
            cx = rng.uniform(r + 2, w - r - 2)
            lo, hi = (r + 2, h - r - 2) if y_range is None else (max(r + 2, y_range[0]), min(h - r - 2, y_range[1]))
            if hi <= lo:
                continue
            cy = rng.uniform(lo, hi)
            if all(math.hypot(cx - x, cy - y) > r + rr + 3 for x, y, rr in discs):
                discs.append((cx, cy, r))
                break
    return discs


def draw_scene(rng: np.random.Generator, h: int, w: int, num_objects: int, r_range: Tuple[float, float],
               background: Optional[np.ndarray] = None, y_range=None) -> Tuple[np.ndarray, List[dict]]:
    """Paint ``num_objects`` random shapes on a background.

    Returns:
        (uint8 image (h, w, 3), objects) where each object is a dict with ``shape``, ``colour``,
        ``polygon`` (N, 2), ``mask`` (h, w) uint8 - exactly the pixels painted for it.
    """
    img = textured_background(rng, h, w) if background is None else background.astype(np.float32).copy()
    objects = []
    for cx, cy, r in _place(rng, h, w, num_objects, r_range, y_range):
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour_name = sorted(COLOURS)[int(rng.integers(len(COLOURS)))]
        poly = shape_polygon(shape, cx, cy, r, rng.uniform(0, 2 * np.pi))
        mask = _rasterize(poly, h, w)
        if mask.sum() == 0:
            continue
        # a light shading across the shape so that it is not a perfectly flat colour
        shade = 1 + 0.12 * rng.uniform(-1, 1) * (np.mgrid[0:h, 0:w][1] - cx) / max(r, 1)
        fill = np.asarray(COLOURS[colour_name], np.float32)[None, None] * shade[..., None]
        m = mask.astype(bool)
        img[m] = fill[m]
        objects.append(dict(shape=shape, colour=colour_name, polygon=poly, mask=mask))
    img = np.clip(img + rng.normal(0, 3, size=img.shape), 0, 255).astype(np.uint8)
    return img, objects


# --------------------------------------------------------------------------------------------------------
# COCO RLE (uncompressed, column-major, first run is background)
# --------------------------------------------------------------------------------------------------------
def mask_to_rle(mask: np.ndarray) -> Dict:
    h, w = mask.shape
    flat = np.asarray(mask, dtype=np.uint8).flatten(order='F')
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {'size': [int(h), int(w)], 'counts': [int(c) for c in counts]}


def rle_to_mask(rle: Dict) -> np.ndarray:
    h, w = rle['size']
    flat = np.zeros(h * w, dtype=np.uint8)
    pos, val = 0, 0
    for c in rle['counts']:
        flat[pos:pos + c] = val
        pos += c
        val = 1 - val
    return flat.reshape((h, w), order='F')


def _tight_box(mask: np.ndarray) -> List[float]:
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1), float(ys.max() - y0 + 1)]


def _save_png(arr: np.ndarray, path: str):
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(arr).save(path, optimize=False)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    """Independent, reproducible stream per (seed, dataset, split)."""
    return np.random.default_rng([seed, *stream])


# --------------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------------
def make_coco(out_dir: str, seed: int = 0, num_train: int = 400, num_val: int = 64, size: int = 128,
              min_objects: int = 2, max_objects: int = 4, r_range: Optional[Tuple[float, float]] = None) -> Dict[str, str]:
    """Write ``{train,val}/*.png`` and ``annotations/instances_{train,val}.json``; returns the json paths."""
    r_range = r_range or (size * 0.1, size * 0.24)  # 96 px: objects of about 19 to 46 px
    categories = [dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(SHAPES)]
    paths = {}
    for split_idx, (split, num) in enumerate((('train', num_train), ('val', num_val))):
        rng = _rng(seed, 0, split_idx)
        images, annotations = [], []
        for i in range(num):
            img, objects = draw_scene(rng, size, size, int(rng.integers(min_objects, max_objects + 1)), r_range)
            file_name = f'{i:06d}.png'
            _save_png(img, osp.join(out_dir, split, file_name))
            images.append(dict(id=i + 1, file_name=file_name, height=size, width=size))
            for obj in objects:
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=i + 1, category_id=SHAPES.index(obj['shape']) + 1,
                    bbox=_tight_box(obj['mask']), area=float(obj['mask'].sum()),
                    segmentation=mask_to_rle(obj['mask']), iscrowd=0, colour=obj['colour']))
        ann_path = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        os.makedirs(osp.dirname(ann_path), exist_ok=True)
        with open(ann_path, 'w') as f:
            json.dump(dict(info=dict(description=f'dgmn_mm synthetic shapes, seed {seed}', version='1.0'),
                           licenses=[], images=images, annotations=annotations, categories=categories), f)
        paths[split] = ann_path
    return paths


def make_cityscapes(out_dir: str, seed: int = 0, num_train: int = 32, num_val: int = 8,
                    size: Tuple[int, int] = (128, 256), city: str = 'demo'):
    """Write Cityscapes-style ``leftImg8bit`` images and ``gtFine`` ``*_labelTrainIds.png`` maps."""
    h, w = size
    for split_idx, (split, num) in enumerate((('train', num_train), ('val', num_val))):
        rng = _rng(seed, 1, split_idx)
        for i in range(num):
            # three horizontal bands with their own textures: sky, building, road
            y1 = int(rng.uniform(0.2, 0.35) * h)
            y2 = int(rng.uniform(0.55, 0.7) * h)
            bg = np.empty((h, w, 3), np.float32)
            label = np.empty((h, w), np.uint8)
            for (a, b), name in (((0, y1), 'sky'), ((y1, y2), 'building'), ((y2, h), 'road')):
                bg[a:b] = textured_background(rng, b - a, w)
                label[a:b] = CITYSCAPES_BACKGROUND_IDS[name]
            img, objects = draw_scene(rng, h, w, int(rng.integers(2, 6)), (h * 0.08, h * 0.2), background=bg)
            for obj in objects:
                label[obj['mask'].astype(bool)] = CITYSCAPES_SHAPE_IDS[obj['shape']]
            stem = f'{city}_{i:06d}_000019'
            _save_png(img, osp.join(out_dir, 'leftImg8bit', split, city, f'{stem}_leftImg8bit.png'))
            _save_png(label, osp.join(out_dir, 'gtFine', split, city, f'{stem}_gtFine_labelTrainIds.png'))


def make_imagenet(out_dir: str, seed: int = 0, num_train: int = 40, num_val: int = 10, size: int = 64):
    """Write an ImageNet-style class folder ``{train,val}/<shape>/<shape>_0000.png`` (one shape per image);
    ``num_train``/``num_val`` are per class."""
    for split_idx, (split, num) in enumerate((('train', num_train), ('val', num_val))):
        for cls_idx, shape in enumerate(SHAPES):
            rng = _rng(seed, 2, split_idx, cls_idx)
            for i in range(num):
                img = textured_background(rng, size, size)
                r = rng.uniform(0.2, 0.4) * size
                cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
                colour = COLOURS[sorted(COLOURS)[int(rng.integers(len(COLOURS)))]]
                m = _rasterize(shape_polygon(shape, cx, cy, r, rng.uniform(0, 2 * np.pi)), size, size).astype(bool)
                img[m] = colour
                img = np.clip(img + rng.normal(0, 3, size=img.shape), 0, 255).astype(np.uint8)
                _save_png(img, osp.join(out_dir, split, shape, f'{shape}_{i:04d}.png'))


@contextmanager
def _exclusive(lock_path: str):
    """Hold an exclusive lock on ``lock_path`` (POSIX ``flock``; a no-op where fcntl does not exist), so
    that two runs started together (two ``make demo``, parallel test workers) write the data once."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    os.makedirs(osp.dirname(osp.abspath(lock_path)), exist_ok=True)
    with open(lock_path, 'a') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def make_demo_data(out: str = 'data/demo', seed: int = 0, force: bool = False, sizes: Optional[dict] = None,
                   parts: Sequence[str] = ('coco', 'cityscapes', 'imagenet'), verbose: bool = True) -> dict:
    """Write all demo datasets under ``out`` unless ``out/demo_data.json`` says that exactly this (seed,
    sizes, parts, format version) is already there. Returns the marker's content. Concurrent calls on the
    same ``out`` are serialised by a lock file ``out.lock``: the later ones find the marker and skip."""
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    unknown = set(sizes) - set(DEFAULT_SIZES)
    if unknown:
        raise ValueError(f'unknown size keys {sorted(unknown)}; known: {sorted(DEFAULT_SIZES)}')
    spec = dict(format_version=FORMAT_VERSION, seed=seed, sizes=sizes, parts=sorted(parts),
                classes=list(SHAPES))
    with _exclusive(osp.normpath(out) + '.lock'):
        return _make_demo_data(out, spec, seed, force, sizes, parts, verbose)


def _make_demo_data(out, spec, seed, force, sizes, parts, verbose) -> dict:
    marker = osp.join(out, 'demo_data.json')
    if not force and osp.isfile(marker):
        with open(marker) as f:
            if json.load(f) == spec:
                if verbose:
                    print(f'demo data already in {out} (seed {seed}); skipping (use --force to rewrite)')
                return spec
    if osp.isfile(marker):
        os.remove(marker)
    for part in parts:  # no stale files from an earlier, differently sized run
        shutil.rmtree(osp.join(out, part), ignore_errors=True)
    if 'coco' in parts:
        make_coco(osp.join(out, 'coco'), seed, sizes['coco_train'], sizes['coco_val'], sizes['coco_size'])
    if 'cityscapes' in parts:
        make_cityscapes(osp.join(out, 'cityscapes'), seed, sizes['cityscapes_train'], sizes['cityscapes_val'])
    if 'imagenet' in parts:
        make_imagenet(osp.join(out, 'imagenet'), seed, sizes['imagenet_train'], sizes['imagenet_val'],
                      sizes['imagenet_size'])
    with open(marker, 'w') as f:
        json.dump(spec, f, indent=1)
    if verbose:
        print(f'wrote demo data to {out} (seed {seed}): ' + ', '.join(parts))
    return spec

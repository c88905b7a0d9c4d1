"""The synthetic demo data (dgmn_mm/demo_data.py) and `tools/demo.py --quick` end to end."""
import filecmp
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dgmn_mm import demo_data as synthetic
from dgmn_mm.demo_data import (CITYSCAPES_BACKGROUND_IDS, CITYSCAPES_SHAPE_IDS, COLOURS, SHAPES,
                                        draw_scene, make_demo_data, mask_to_rle, polygon_area, rle_to_mask)

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SMALL = dict(coco_train=6, coco_val=3, cityscapes_train=3, cityscapes_val=2, imagenet_train=3, imagenet_val=2)


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp('demo') / 'data')
    make_demo_data(out, seed=0, sizes=SMALL, verbose=False)
    return out


def _files(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


# ------------------------------------------------------------------------------------------ generator
def test_deterministic_per_seed(demo_data, tmp_path):
    again = str(tmp_path / 'again')
    make_demo_data(again, seed=0, sizes=SMALL, verbose=False)
    files = _files(demo_data)
    assert files == _files(again) and len(files) > 40
    match, mismatch, errors = filecmp.cmpfiles(demo_data, again, files, shallow=False)
    assert not mismatch and not errors

    other = str(tmp_path / 'seed1')
    make_demo_data(other, seed=1, sizes=SMALL, parts=('coco', ), verbose=False)
    a = np.asarray(Image.open(osp.join(demo_data, 'coco', 'train', '000000.png')))
    b = np.asarray(Image.open(osp.join(other, 'coco', 'train', '000000.png')))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_skips_when_present_and_rewrites_on_change(tmp_path):
    out = str(tmp_path / 'd')
    sizes = dict(SMALL, coco_train=4)
    make_demo_data(out, seed=0, sizes=sizes, parts=('coco', ), verbose=False)
    png = osp.join(out, 'coco', 'train', '000003.png')
    os.utime(png, (1, 1))
    make_demo_data(out, seed=0, sizes=sizes, parts=('coco', ), verbose=False)
    assert os.stat(png).st_mtime == 1  # same spec: nothing rewritten
    make_demo_data(out, seed=0, sizes=dict(sizes, coco_train=2), parts=('coco', ), verbose=False)
    assert sorted(os.listdir(osp.join(out, 'coco', 'train'))) == ['000000.png', '000001.png']  # no stale files
    with open(osp.join(out, 'demo_data.json')) as f:
        assert json.load(f)['sizes']['coco_train'] == 2


def test_concurrent_calls_write_the_data_once(tmp_path, monkeypatch):
    """Two runs started together: the second waits for the first's lock, finds the marker and skips."""
    import threading
    import time
    real, calls = synthetic.make_coco, []

    def slow_make_coco(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.3)  # the other thread starts meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, 'make_coco', slow_make_coco)
    out, errors = str(tmp_path / 'shared'), []

    def run():
        try:
            make_demo_data(out, seed=0, sizes=SMALL, parts=('coco', ), verbose=False)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1
    assert len(os.listdir(osp.join(out, 'coco', 'train'))) == SMALL['coco_train']


def test_scene_masks_are_the_drawn_shapes():
    rng = np.random.default_rng(3)
    for _ in range(10):
        img, objects = draw_scene(rng, 128, 128, 5, (10, 26))
        assert img.dtype == np.uint8 and img.shape == (128, 128, 3) and len(objects) >= 1
        union = np.zeros((128, 128), int)
        for obj in objects:
            m = obj['mask']
            union += m
            poly = obj['polygon']
            perimeter = np.linalg.norm(np.diff(np.vstack([poly, poly[:1]]), axis=0), axis=1).sum()
            assert abs(int(m.sum()) - polygon_area(poly)) <= 0.6 * perimeter + 4, obj['shape']
            # the pixels under the mask carry the object's colour (up to the shading and grain)
            colour = np.asarray(COLOURS[obj['colour']], float)
            mean = img[m.astype(bool)].reshape(-1, 3).mean(0)
            assert np.abs(mean - colour).max() < 20
            assert np.array_equal(rle_to_mask(mask_to_rle(m)), m)
        assert union.max() == 1  # objects never overlap


@pytest.mark.parametrize('shape,ratio', [('circle', np.pi), ('square', 2.0), ('triangle', 3 * np.sqrt(3) / 4)])
def test_shape_areas(shape, ratio):
    r = 20.0
    assert polygon_area(synthetic.shape_polygon(shape, 50, 50, r, 0.3)) == pytest.approx(ratio * r * r, rel=0.01)
    with pytest.raises(ValueError):
        synthetic.shape_polygon('hexagon', 0, 0, 1)


def test_coco_json_is_valid(demo_data):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    for split, num in (('train', SMALL['coco_train']), ('val', SMALL['coco_val'])):
        coco = COCO(osp.join(demo_data, 'coco', 'annotations', f'instances_{split}.json'))
        assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)
        assert len(coco.getImgIds()) == num
        assert len(coco.getAnnIds()) >= 2 * num
        for img_info in coco.loadImgs(coco.getImgIds()):
            img = np.asarray(Image.open(osp.join(demo_data, 'coco', split, img_info['file_name'])))
            size = synthetic.DEFAULT_SIZES['coco_size']
            assert img.shape == (img_info['height'], img_info['width'], 3) == (size, size, 3)
            for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_info['id'])):
                assert ann['iscrowd'] == 0
                m = coco.annToMask(ann)
                assert m.shape == img.shape[:2]
                assert m.sum() == ann['area'] > 0
                assert mask_utils.area(coco.annToRLE(ann)) == ann['area']
                ys, xs = np.nonzero(m)
                x, y, w, h = ann['bbox']
                assert (x, y, x + w - 1, y + h - 1) == (xs.min(), ys.min(), xs.max(), ys.max())  # tight box
                fill = ann['area'] / (w * h)  # how much of its box the shape fills
                lo, hi = dict(circle=(0.7, 0.85), square=(0.45, 1.0), triangle=(0.3, 0.6), star=(0.2, 0.5))[
                    SHAPES[ann['category_id'] - 1]]
                assert lo <= fill <= hi, (ann['category_id'], fill)
                colour = np.asarray(COLOURS[ann['colour']], float)
                assert np.abs(img[m.astype(bool)].mean(0) - colour).max() < 20


def test_mmdet_reads_the_coco_set(demo_data):
    from mmdet.datasets import CocoDataset
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    ds = CocoDataset(data_root=osp.join(demo_data, 'coco'), ann_file='annotations/instances_train.json',
                     data_prefix=dict(img='train/'), metainfo=dict(classes=SHAPES),
                     pipeline=[dict(type='LoadImageFromFile'),
                               dict(type='LoadAnnotations', with_bbox=True, with_mask=True)])
    assert len(ds) == SMALL['coco_train']
    item = ds[0]
    masks = item['gt_masks'].to_ndarray()
    assert masks.shape[0] == len(item['gt_bboxes']) >= 2
    for m, box in zip(masks, item['gt_bboxes'].tensor.numpy()):
        ys, xs = np.nonzero(m)
        np.testing.assert_allclose(box, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def test_cityscapes_label_maps(demo_data):
    from mmseg.datasets import CityscapesDataset

    root = osp.join(demo_data, 'cityscapes')
    allowed = set(CITYSCAPES_SHAPE_IDS.values()) | set(CITYSCAPES_BACKGROUND_IDS.values())
    for split in ('train', 'val'):
        ds = CityscapesDataset(data_root=root, data_prefix=dict(img_path=f'leftImg8bit/{split}',
                                                                seg_map_path=f'gtFine/{split}'), pipeline=[])
        assert len(ds) == SMALL[f'cityscapes_{split}']
        seen = set()
        for i in range(len(ds)):
            info = ds.get_data_info(i)
            assert info['img_path'].endswith('_leftImg8bit.png')
            assert info['seg_map_path'].endswith('_gtFine_labelTrainIds.png')
            img = np.asarray(Image.open(info['img_path']))
            label = np.asarray(Image.open(info['seg_map_path']))
            assert img.shape == (128, 256, 3) and label.shape == (128, 256) and label.dtype == np.uint8
            ids = set(np.unique(label).tolist())
            assert ids <= allowed and {10, 2, 0} <= ids
            seen |= ids
            # sky above building above road: the first row is sky, the last row road (where no shape covers it)
            assert (label[0] == 10).mean() > 0.5 and (label[-1] == 0).mean() > 0.5
            # the shape pixels are painted in saturated colours, the backgrounds are muted
            shapes = np.isin(label, list(CITYSCAPES_SHAPE_IDS.values()))
            sat = img.max(-1).astype(int) - img.min(-1)
            assert shapes.any() and np.median(sat[shapes]) > 100 > np.median(sat[~shapes])
        assert seen & set(CITYSCAPES_SHAPE_IDS.values())


def test_imagenet_folder(demo_data):
    from mmpretrain.datasets import CustomDataset

    root = osp.join(demo_data, 'imagenet')
    for split in ('train', 'val'):
        assert sorted(os.listdir(osp.join(root, split))) == sorted(SHAPES)
        for shape in SHAPES:
            files = sorted(os.listdir(osp.join(root, split, shape)))
            assert files == [f'{shape}_{i:04d}.png' for i in range(SMALL[f'imagenet_{split}'])]
            assert Image.open(osp.join(root, split, shape, files[0])).size == (64, 64)
        ds = CustomDataset(data_root=root, data_prefix=split)
        assert list(ds.CLASSES) == sorted(SHAPES)
        assert len(ds) == 4 * SMALL[f'imagenet_{split}']
        assert osp.basename(osp.dirname(ds.get_data_info(0)['img_path'])) == ds.CLASSES[ds.get_gt_labels()[0]]


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize('path,scope', [
    ('configs/mmdet/demo/mask-rcnn_dgmn2-tiny_fpn_synthetic.py', 'mmdet'),
    ('configs/mmseg/demo/fpn_dgmn2-tiny_synthetic.py', 'mmseg'),
    ('configs/mmpretrain/demo/dgmn2-tiny_synthetic.py', 'mmpretrain'),
])
def test_demo_configs_build_and_run(path, scope, demo_data):
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(osp.join(REPO_ROOT, path))
    assert cfg.default_scope == scope and cfg.model.backbone.type == 'DGMN2'
    assert 'dgmn_mm' in cfg.custom_imports.imports
    init_default_scope(scope)
    if scope == 'mmdet':
        from mmdet.registry import DATASETS, MODELS
        root = osp.join(demo_data, 'coco') + '/'
    elif scope == 'mmseg':
        from mmseg.registry import DATASETS, MODELS
        root = osp.join(demo_data, 'cityscapes') + '/'
    else:
        from mmpretrain.registry import DATASETS, MODELS
        root = osp.join(demo_data, 'imagenet') + '/'
    cfg.train_dataloader.dataset.data_root = root
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(dataset) > 0
    model = MODELS.build(cfg.model)
    model.train()
    batch = model.data_preprocessor(dict(inputs=[dataset[0]['inputs'], dataset[1]['inputs']],
                                         data_samples=[dataset[0]['data_samples'], dataset[1]['data_samples']]),
                                    True)
    losses = model(**batch, mode='loss')
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    assert model.backbone.stages[0].patch_embed is not None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


# ------------------------------------------------------------------------------------------ tools
@pytest.mark.slow  # the demo-data CLI in two subprocesses
def test_make_demo_data_cli(tmp_path):
    out = tmp_path / 'cli'
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'make_demo_data.py'), '--out', str(out), '--seed', '0',
           '--parts', 'coco', '--coco-train', '2', '--coco-val', '1']
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    assert sorted(os.listdir(out / 'coco' / 'train')) == ['000000.png', '000001.png']
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and 'skipping' in second.stdout


@pytest.mark.slow  # the demo: training and testing in subprocesses
def test_demo_quick_end_to_end(tmp_path):
    work_dir, data_root = tmp_path / 'work', tmp_path / 'data'
    proc = subprocess.run(
        [sys.executable, osp.join(REPO_ROOT, 'tools', 'demo.py'), '--quick', '--work-dir', str(work_dir),
         '--data-root', str(data_root)],
        capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'box  AP =' in proc.stdout and 'mask AP =' in proc.stdout
    assert 'Epoch(train)' in out and 'Evaluate annotation type *segm*' in out  # progress log, pycocotools
    with open(work_dir / 'demo_metrics.json') as f:
        summary = json.load(f)
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert key in summary['metrics'] and -1 <= summary['metrics'][key] <= 1
    assert summary['bbox_mAP'] == summary['metrics']['coco/bbox_mAP']
    vis = sorted(os.listdir(work_dir / 'vis'))
    assert vis == ['predictions.png', 'val_000.png', 'val_001.png']
    panel = Image.open(work_dir / 'vis' / 'val_000.png')
    size = synthetic.DEFAULT_SIZES['coco_size']
    assert panel.size == (2 * 3 * size + 6, 3 * size)  # ground truth | prediction, upscaled 3x
    assert np.asarray(panel).std() > 10
    assert (data_root / 'coco' / 'annotations' / 'instances_val.json').is_file()

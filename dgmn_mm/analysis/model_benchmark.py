"""Whole models with DGMN2-Tiny against the same models with PVTv2-b1: inference and training steps.

Users pick a detector or a segmentor, not a backbone. Each pair below is one model with two backbones:
DGMN2-Tiny (``DGMN2``, the project's config) and PVTv2-b1 (mmdet's ``PyramidVisionTransformerV2`` with
embed_dims 64, depths 2/2/2/2, heads 1/2/5/8, MLP ratios 8/8/4/4, sr_ratios 8/4/2/1: the same widths,
depths and MLP ratios as DGMN2-Tiny). Necks and heads are identical within a pair.

* ``retinanet``: ``configs/mmdet/dgmn2/retinanet_dgmn2-tiny_fpn_1x_coco.py`` vs mmdet's own
  ``mmdet::pvt/retinanet_pvtv2-b1_fpn_1x_coco.py``;
* ``mask-rcnn``: ``configs/mmdet/dgmn2/mask-rcnn_dgmn2-tiny_fpn_1x_coco.py`` vs the same config with the
  backbone replaced by PVTv2-b1 (mmdet ships no Mask R-CNN PVTv2 config; drop path 0.1 as in the DGMN2
  config);
* ``semantic-fpn``: ``configs/mmseg/dgmn2/fpn_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py`` vs the same
  config with the backbone replaced by ``mmdet.PyramidVisionTransformerV2`` b1 (mmseg has no PVTv2).

No weights and no dataset are read ('Pretrained' init_cfgs are dropped; SyncBN -> BN on CPU).

* :func:`infer_step`: the network forward (backbone + neck + head, ``mode='tensor'``, eval,
  ``torch.no_grad()``, optionally under ``torch.autocast(device, torch.bfloat16)``), batch 1;
* :func:`train_step`: one full iteration ``model.train_step(data, optim_wrapper)`` = data preprocessor,
  forward with losses, backward and an AdamW step, on synthetic data: random uint8 images with 5 random
  boxes (and masks) per image for the detectors (``mmdet.testing.demo_mm_inputs``), random 19-class label
  maps for Semantic FPN.

:func:`run_pairs` times all cases in interleaved rounds (one step of every case per round, ``warmup`` rounds
first, the median over ``runs`` rounds), so that drifts of a shared machine's speed hit every case alike;
:func:`pairs_table` formats the result as a Markdown table.
"""
import copy
import os
import os.path as osp
import statistics
import time

import torch

from .complexity import build_model, make_inputs

__all__ = ['MODEL_NAMES', 'BACKBONES', 'CONFIGS', 'PVTV2_B1', 'CSV_COLUMNS', 'config_root', 'load_pair_config',
           'build_pair_model', 'infer_step', 'train_step', 'run_pairs', 'pairs_table']


MODEL_NAMES = ('retinanet', 'mask-rcnn', 'semantic-fpn')
BACKBONES = ('dgmn2-tiny', 'pvtv2-b1')
CONFIGS = {
    'retinanet': 'configs/mmdet/dgmn2/retinanet_dgmn2-tiny_fpn_1x_coco.py',
    'mask-rcnn': 'configs/mmdet/dgmn2/mask-rcnn_dgmn2-tiny_fpn_1x_coco.py',
    'semantic-fpn': 'configs/mmseg/dgmn2/fpn_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py',
}
PVTV2_B1 = dict(type='PyramidVisionTransformerV2', embed_dims=64, num_layers=[2, 2, 2, 2],
                num_heads=[1, 2, 5, 8], sr_ratios=[8, 4, 2, 1], mlp_ratios=[8, 8, 4, 4], init_cfg=None)
CSV_COLUMNS = ['model', 'backbone', 'mode', 'height', 'width', 'batch', 'ms_median', 'ms_min', 'ms_max',
               'images_per_s']


def config_root() -> str:
    """The folder holding ``configs/``: the package's ``.mim`` (installed, or the checkout's links), else the
    source checkout."""
    pkg = osp.dirname(osp.dirname(osp.abspath(__file__)))
    for root in (osp.join(pkg, '.mim'), osp.dirname(pkg)):
        if osp.isdir(osp.join(root, 'configs')):
            return root
    raise FileNotFoundError(f'no configs/ folder next to {pkg} or in its .mim folder')


def load_pair_config(model: str, backbone: str):
    """The config of one (model, backbone) case: ``model`` in :data:`MODEL_NAMES`, ``backbone`` in
    :data:`BACKBONES`."""
    if model not in MODEL_NAMES or backbone not in BACKBONES:
        raise ValueError(f'model must be one of {MODEL_NAMES} and backbone one of {BACKBONES}, got '
                         f'{model!r}, {backbone!r}')
    from mmengine.config import Config
    if model == 'retinanet' and backbone == 'pvtv2-b1':
        from mmengine.hub import get_config
        cfg = get_config('mmdet::pvt/retinanet_pvtv2-b1_fpn_1x_coco.py')
        cfg.model.backbone.init_cfg = None  # (the ImageNet weights are an URL; nothing is downloaded)
        return cfg
    cfg = Config.fromfile(osp.join(config_root(), CONFIGS[model]))
    if backbone == 'pvtv2-b1':
        bb = copy.deepcopy(PVTV2_B1)
        bb['drop_path_rate'] = cfg.model.backbone.get('drop_path_rate', 0.1)
        if model == 'semantic-fpn':
            bb['type'] = 'mmdet.PyramidVisionTransformerV2'
        cfg.model.backbone = bb
    return cfg


def build_pair_model(model: str, backbone: str, device):
    """The model of one case on ``device`` (seed 0), checked to carry the intended backbone."""
    if model == 'semantic-fpn' and backbone == 'pvtv2-b1':
        import mmdet.models  # noqa: F401  (registers PyramidVisionTransformerV2 in mmdet's scope)
    torch.manual_seed(0)
    net = build_model(load_pair_config(model, backbone)).to(device)
    if backbone == 'dgmn2-tiny':
        assert type(net.backbone).__name__ == 'DGMN2', type(net.backbone)
    else:
        assert type(net.backbone).__name__ == 'PyramidVisionTransformerV2', type(net.backbone)
    return net


def infer_step(net, shape, device, amp: bool):
    """A function running one inference forward of one random (H, W) = ``shape`` image."""
    inputs, forward = make_inputs(net, shape, 1)
    inputs = inputs.to(device)

    def step():
        net.eval()
        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
            forward(inputs)
    return step


def _seg_batch(shape, batch, num_classes=19):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = shape
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g))
        s = SegDataSample()
        s.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w), generator=g))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def train_step(net, model: str, shape, batch: int, device):
    """One ``train_step`` (preprocess, losses, backward, AdamW step) on a fixed synthetic batch."""
    from mmengine.optim import OptimWrapper
    if model == 'semantic-fpn':
        data = _seg_batch(shape, batch)
        net.data_preprocessor.size = tuple(shape)  # pad to the training shape, not the config's crop
    else:
        from mmdet.testing import demo_mm_inputs
        data = demo_mm_inputs(batch, [(3, *shape)] * batch, num_items=[5] * batch, num_classes=80,
                              with_mask=(model == 'mask-rcnn'))
    optim = OptimWrapper(torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4))

    def step():
        net.train()
        net.train_step(copy.copy(data), optim)
    return step


def run_pairs(models=MODEL_NAMES, modes=('infer', 'train'), infer_shape=(800, 1333), seg_infer_shape=(769, 769),
              train_shape=(512, 512), train_batch=2, runs=3, warmup=1, amp=False, device='cpu'):
    """Time every (model, backbone, mode) case.

    Args:
        models (Sequence[str]): names from :data:`MODEL_NAMES`.
        modes (Sequence[str]): 'infer' and/or 'train'.
        infer_shape (tuple): (H, W) of the detectors' inference image (COCO's test scale by default).
        seg_infer_shape (tuple): (H, W) of Semantic FPN's inference image (the Cityscapes crop).
        train_shape (tuple): (H, W) of the training images.
        train_batch (int): training batch size.
        runs (int): timed rounds (the median is reported).
        warmup (int): untimed rounds first.
        amp (bool): inference under ``torch.autocast(device, torch.bfloat16)`` (mode 'infer-bf16').
        device (str): 'cpu' or a CUDA device.

    Returns:
        list[dict]: one row per case, with the keys of :data:`CSV_COLUMNS`.
    """
    bad = [m for m in models if m not in MODEL_NAMES]
    if bad or not models:
        raise ValueError(f'models must be names of {MODEL_NAMES}, got {list(models)}')
    if not modes or any(m not in ('infer', 'train') for m in modes):
        raise ValueError(f"modes must be names of ('infer', 'train'), got {list(modes)}")
    if train_batch < 1 or runs < 1 or warmup < 0:
        raise ValueError(f'train_batch and runs must be >= 1, warmup >= 0, got {train_batch}, {runs}, {warmup}')
    device = torch.device(device)
    import dgmn_mm  # noqa: F401
    rows, cases = [], []
    for model in models:
        for backbone in BACKBONES:
            net = build_pair_model(model, backbone, device)
            for mode in modes:
                if mode == 'infer':
                    shape = seg_infer_shape if model == 'semantic-fpn' else infer_shape
                    fn, batch = infer_step(net, shape, device, amp), 1
                else:
                    shape, batch = train_shape, train_batch
                    fn = train_step(net, model, shape, batch, device)
                row = dict(model=model, backbone=backbone, mode=mode + ('-bf16' if amp and mode == 'infer'
                                                                         else ''),
                           height=shape[0], width=shape[1], batch=batch)
                rows.append(row)
                cases.append((row, fn, []))
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for rnd in range(warmup + runs):
        for row, fn, times in cases:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if rnd >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        print(f'  round {rnd + 1}/{warmup + runs} done ({os.getloadavg()[0]:.1f} load)', flush=True)
    for row, _, times in cases:
        row.update(ms_median=statistics.median(times), ms_min=min(times), ms_max=max(times))
        row['images_per_s'] = row['batch'] * 1e3 / row['ms_median']
    return rows


def pairs_table(rows) -> str:
    """Markdown table of :func:`run_pairs` rows: DGMN2-Tiny and PVTv2-b1 side by side, with the speed-up."""
    lines = ['| model | mode | input (batch) | DGMN2-Tiny | PVTv2-b1 | DGMN2 speed-up |', '|---|---|---|---|---|---|']
    for model in MODEL_NAMES:
        for mode in sorted({r['mode'] for r in rows}):
            pair = {r['backbone']: r for r in rows if r['model'] == model and r['mode'] == mode}
            if len(pair) != 2:
                continue
            d, p = pair['dgmn2-tiny'], pair['pvtv2-b1']

            def fmt(r):
                if mode.startswith('infer'):
                    return f"{r['images_per_s']:.3f} img/s ({r['ms_median']:.0f} ms)"
                return f"{r['ms_median'] / 1e3:.2f} s/iter"
            lines.append(f"| {model} | {mode} | {d['height']}x{d['width']} ({d['batch']}) | {fmt(d)} | {fmt(p)} | "
                         f"{p['ms_median'] / d['ms_median']:.2f}x |")
    return '\n'.join(lines)

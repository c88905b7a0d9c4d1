"""Whole models with DGMN2-Tiny against the same models with PVTv2-b1: inference speed and training steps.

    python tools/analysis_tools/benchmark_models.py                         # all pairs, ~10-20 min on CPU
    python tools/analysis_tools/benchmark_models.py --models retinanet --runs 3
    python tools/analysis_tools/benchmark_models.py --quick                 # tiny sizes, seconds

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

* **inference** (``--infer-shape``, default 800 x 1333 for the detectors = COCO's test scale, and one
  769 x 769 crop for Semantic FPN = the Cityscapes crop; batch 1): the network forward (backbone + neck +
  head, ``mode='tensor'``, eval, ``torch.no_grad()``), reported as images/s;
* **training** (``--train-shape``, default 512 x 512, ``--train-batch`` 2): one full iteration
  ``model.train_step(data, optim_wrapper)`` = data preprocessor, forward with losses, backward and an AdamW
  step, on synthetic data: random uint8 images with 5 random boxes (and masks) per image for the
  detectors (``mmdet.testing.demo_mm_inputs``), random 19-class label maps for Semantic FPN; reported as
  seconds per iteration.

``--amp`` runs the inference forwards under ``torch.autocast(device, torch.bfloat16)``.

All cases are timed in interleaved rounds (one step of every case per round, ``--warmup`` rounds first,
the median over ``--runs`` rounds), so that drifts of a shared machine's speed hit every case alike.
Outputs: a table on stdout and ``models_benchmark.csv`` in ``--out`` (columns
``model,backbone,mode,height,width,batch,ms_median,ms_min,ms_max,images_per_s``).
"""
import argparse
import copy
import csv
import importlib.util
import os
import os.path as osp
import statistics
import sys
import time

import torch

if __package__ in (None, ''):
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

_spec = importlib.util.spec_from_file_location('dgmn_get_flops', osp.join(osp.dirname(osp.abspath(__file__)),
                                                                           'get_flops.py'))
gf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gf)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MODELS = ('retinanet', 'mask-rcnn', 'semantic-fpn')
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


def load_cfg(model: str, backbone: str):
    """The config of one (model, backbone) case."""
    from mmengine.config import Config
    if model == 'retinanet' and backbone == 'pvtv2-b1':
        from mmengine.hub import get_config
        cfg = get_config('mmdet::pvt/retinanet_pvtv2-b1_fpn_1x_coco.py')
        cfg.model.backbone.init_cfg = None  # (the ImageNet weights are an URL; nothing is downloaded)
        return cfg
    cfg = Config.fromfile(osp.join(REPO, CONFIGS[model]))
    if backbone == 'pvtv2-b1':
        bb = copy.deepcopy(PVTV2_B1)
        bb['drop_path_rate'] = cfg.model.backbone.get('drop_path_rate', 0.1)
        if model == 'semantic-fpn':
            bb['type'] = 'mmdet.PyramidVisionTransformerV2'
        cfg.model.backbone = bb
    return cfg


def build(model: str, backbone: str, device):
    if model == 'semantic-fpn' and backbone == 'pvtv2-b1':
        import mmdet.models  # noqa: F401  (registers PyramidVisionTransformerV2 in mmdet's scope)
    torch.manual_seed(0)
    net = gf.build_model(load_cfg(model, backbone)).to(device)
    if backbone == 'dgmn2-tiny':
        assert type(net.backbone).__name__ == 'DGMN2', type(net.backbone)
    else:
        assert type(net.backbone).__name__ == 'PyramidVisionTransformerV2', type(net.backbone)
    return net


def infer_step(net, shape, device, amp: bool):
    inputs, forward = gf.make_inputs(net, shape, 1)
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


def run(args):
    device = torch.device(args.device)
    import dgmn_mm  # noqa: F401
    rows, cases = [], []
    for model in args.models:
        for backbone in BACKBONES:
            net = build(model, backbone, device)
            for mode in args.modes:
                if mode == 'infer':
                    shape = args.seg_infer_shape if model == 'semantic-fpn' else args.infer_shape
                    fn, batch = infer_step(net, shape, device, args.amp), 1
                else:
                    shape, batch = args.train_shape, args.train_batch
                    fn = train_step(net, model, shape, batch, device)
                row = dict(model=model, backbone=backbone, mode=mode + ('-bf16' if args.amp and mode == 'infer'
                                                                         else ''),
                           height=shape[0], width=shape[1], batch=batch)
                rows.append(row)
                cases.append((row, fn, []))
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for rnd in range(args.warmup + args.runs):
        for row, fn, times in cases:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if rnd >= args.warmup:
                times.append((time.perf_counter() - t0) * 1e3)
        print(f'  round {rnd + 1}/{args.warmup + args.runs} done ({os.getloadavg()[0]:.1f} load)', flush=True)
    for row, _, times in cases:
        row.update(ms_median=statistics.median(times), ms_min=min(times), ms_max=max(times))
        row['images_per_s'] = row['batch'] * 1e3 / row['ms_median']
    return rows


def table(rows) -> str:
    lines = ['| model | mode | input (batch) | DGMN2-Tiny | PVTv2-b1 | DGMN2 speed-up |', '|---|---|---|---|---|---|']
    for model in MODELS:
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


def _shape(text):
    try:
        h, w = (int(v) for v in text.lower().split('x'))
        assert h > 0 and w > 0
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f'expected HxW, got {text!r}')
    return h, w


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', default=','.join(MODELS), help=f'comma list of {MODELS}')
    p.add_argument('--modes', default='infer,train', help='comma list of infer, train')
    p.add_argument('--infer-shape', type=_shape, default=(800, 1333), help='detectors, HxW (default 800x1333)')
    p.add_argument('--seg-infer-shape', type=_shape, default=(769, 769), help='Semantic FPN, HxW (769x769)')
    p.add_argument('--train-shape', type=_shape, default=(512, 512), help='HxW of training images (512x512)')
    p.add_argument('--train-batch', type=int, default=2)
    p.add_argument('--runs', type=int, default=3, help='timed rounds (median), default 3')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: unchanged)')
    p.add_argument('--amp', action='store_true', help='inference under torch.autocast(bfloat16)')
    p.add_argument('--quick', action='store_true', help='tiny shapes (128x160 / 128x128), 1 run, no warm-up')
    p.add_argument('--device', default='cpu')
    p.add_argument('--out', default='work_dirs/bench')
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(',') if m.strip()]
    args.modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    bad = [m for m in args.models if m not in MODELS]
    if bad or not args.models:
        p.error(f'--models must be a comma list of {MODELS}, got {bad or args.models}')
    if not args.modes or any(m not in ('infer', 'train') for m in args.modes):
        p.error(f"--modes must be a comma list of ('infer', 'train'), got {args.modes}")
    if args.train_batch < 1 or args.runs < 1 or args.warmup < 0:
        p.error('--train-batch and --runs must be >= 1, --warmup >= 0')
    if args.quick:
        args.infer_shape = args.seg_infer_shape = (128, 160)
        args.train_shape, args.runs, args.warmup = (128, 128), 1, 0
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    rows = run(args)
    os.makedirs(args.out, exist_ok=True)
    path = osp.join(args.out, 'models_benchmark.csv')
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f'{v:.4f}' if isinstance(v, float) else v) for k, v in r.items()})
    print(table(rows))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, median of {args.runs} '
          f'rounds after {args.warmup}, load average at the end {os.getloadavg()}, {time.time() - t0:.0f} s')
    print(f'wrote {path}')
    return rows


if __name__ == '__main__':
    main()

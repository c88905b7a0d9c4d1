"""Whole models with DGMN2-Tiny against the same models with PVTv2-b1: inference speed and training steps.

    python tools/analysis_tools/benchmark_models.py                         # all pairs, ~10-20 min on CPU
    python tools/analysis_tools/benchmark_models.py --models retinanet --runs 3
    python tools/analysis_tools/benchmark_models.py --quick                 # tiny sizes, seconds

Each pair is one model with two backbones, DGMN2-Tiny and PVTv2-b1 (mmdet's ``PyramidVisionTransformerV2``,
the same widths, depths and MLP ratios): ``retinanet``, ``mask-rcnn``, ``semantic-fpn``; which configs they
are is described in :mod:`dgmn_mm.analysis.model_benchmark`. No weights and no dataset are read.

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
The cases and the timing are :mod:`dgmn_mm.analysis.model_benchmark`.
"""
import argparse
import csv
import os
import os.path as osp
import sys
import time

import torch

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if osp.isdir(osp.join(_ROOT, 'dgmn_mm')):  # run from a source checkout: its dgmn_mm first
    sys.path.insert(0, _ROOT)

from dgmn_mm.analysis.model_benchmark import CSV_COLUMNS, MODEL_NAMES, pairs_table, run_pairs  # noqa: E402

__all__ = ['parse_args', 'main']


def _shape(text):
    try:
        h, w = (int(v) for v in text.lower().split('x'))
        assert h > 0 and w > 0
    except (ValueError, AssertionError):
        raise argparse.ArgumentTypeError(f'expected HxW, got {text!r}')
    return h, w


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', default=','.join(MODEL_NAMES), help=f'comma list of {MODEL_NAMES}')
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
    bad = [m for m in args.models if m not in MODEL_NAMES]
    if bad or not args.models:
        p.error(f'--models must be a comma list of {MODEL_NAMES}, got {bad or args.models}')
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
    rows = run_pairs(args.models, args.modes, args.infer_shape, args.seg_infer_shape, args.train_shape,
                     args.train_batch, args.runs, args.warmup, args.amp, args.device)
    os.makedirs(args.out, exist_ok=True)
    path = osp.join(args.out, 'models_benchmark.csv')
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f'{v:.4f}' if isinstance(v, float) else v) for k, v in r.items()})
    print(pairs_table(rows))
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}, median of {args.runs} '
          f'rounds after {args.warmup}, load average at the end {os.getloadavg()}, {time.time() - t0:.0f} s')
    print(f'wrote {path}')
    return rows


if __name__ == '__main__':
    main()

"""Average FLOPs of a DiT model over a dataset with hard gates (the paper's FLOPs column).

Usage::

    python tools/analysis_tools/dit_flops.py CONFIG [--checkpoint CKPT] [--num-images N]
        [--split {val,test}] [--synthetic H W] [--cfg-options k=v ...]

The model is built from the config (classifier, detector or segmentor with a ``DiT`` backbone), the
checkpoint loaded if given, and put in eval mode: the gates are hard (argmax with the momentum weights,
Eq. 3). Images are fed one at a time through the config's data preprocessor (``--split`` dataloader, batch 1,
so no padding to a common batch size) or, with ``--synthetic H W``, random images of that size (no dataset
needed). For every image the backbone reports the FLOPs its gates used (multiply-adds of the blocks, patch
embeddings, gates and stem: the ``complexity`` its output carries, Eq. 5 with hard gates); the tool prints their mean,
standard deviation, min and max, next to the all-gates-open FLOPs and the PVTv2 baseline of the same input
size. Only the backbone is counted (the paper's classification FLOPs add a 0.5 MFLOP head). The statistics
are :mod:`dgmn_mm.analysis.dit`.
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import Config, DictAction

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if osp.isdir(osp.join(_ROOT, 'dgmn_mm')):  # run from a source checkout: its dgmn_mm first
    sys.path.insert(0, _ROOT)

from dgmn_mm.analysis.dit import average_gate_flops, build_dit_model, iter_images  # noqa: E402

__all__ = ['parse_args', 'main']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('--checkpoint', default=None)
    p.add_argument('--num-images', type=int, default=100)
    p.add_argument('--split', choices=['val', 'test'], default='val')
    p.add_argument('--synthetic', type=int, nargs=2, metavar=('H', 'W'), default=None,
                   help='random images of this size instead of the dataset')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    torch.manual_seed(args.seed)
    model = build_dit_model(cfg, args.checkpoint)
    images = iter_images(cfg, model, args.split, args.num_images, args.synthetic, args.seed)
    stats = average_gate_flops(model, images)
    g = 1e9
    print(f"{args.config}: {stats['num_images']} images, hard gates")
    print(f"  DiT backbone GFLOPs: mean {stats['mean'] / g:.3f}  std {stats['std'] / g:.3f}  "
          f"min {stats['min'] / g:.3f}  max {stats['max'] / g:.3f}")
    print(f"  all gates open: {stats['dense'] / g:.3f}   PVTv2 baseline: {stats['pvtv2'] / g:.3f}   "
          f"ratio to open: {stats['mean'] / stats['dense']:.3f}")
    return stats


if __name__ == '__main__':
    main()

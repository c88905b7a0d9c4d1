"""Parameters and FLOPs of any model in ``configs/`` (classifier, detector or segmentor), DGMN2-aware.

Usage::

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W] [--convention {impl,paper}]
        [--breakdown] [--no-pad] [--cfg-options k=v ...] [--json OUT]

The model is built from the config exactly as ``tools/train.py`` would (SyncBN reverted to BN, eval mode,
no weights loaded) and fed one random image of ``--shape`` (default 224 x 224 for classifiers, 800 x 1333
for detectors, 769 x 769 for segmentors), padded as the config's data preprocessor pads
(``pad_size_divisor``). FLOPs are multiply-accumulates (MACs), counted by mmengine's jit counter with
handles for DGMN2's einsums and bilinear node sampling. Two totals are printed:

- ``impl``: what this implementation computes (incl. the node sampling, RelPos on the K used rows);
- ``paper``: the convention of the TPAMI 2022 paper's Table 6 (fvcore on the official code, github
  fudan-zvg/DGMN2: RelPos on all L rows, sampling not counted).

Models with DGMN modules (CVPR 2020) get their modules' parameters and FLOPs in this implementation's and in
the DGMN paper's Table 2 convention. ``--breakdown`` adds a per-operator table and a DGMN2 table (patch
embeddings, qkv + proj, walk predictor, node sampling, messages over K nodes, RelPos, FFN, LayerNorm, rest
of the model). The counting itself is :mod:`dgmn_mm.analysis.complexity` (``from dgmn_mm.analysis import
get_flops``), whose documentation gives every convention.
"""
import argparse
import json
import os.path as osp
import sys

from mmengine.config import DictAction

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if osp.isdir(osp.join(_ROOT, 'dgmn_mm')):  # run from a source checkout: its dgmn_mm first
    sys.path.insert(0, _ROOT)

from dgmn_mm.analysis import format_result, get_flops  # noqa: E402

__all__ = ['parse_args', 'main']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Parameters and FLOPs (MACs) of a dgmn_mm config')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=None,
                        help='input H W (or one value for a square); default 224 for classifiers, '
                        '800 1333 for detectors, 769 769 for segmentors')
    parser.add_argument('--convention', choices=['impl', 'paper'], default='impl',
                        help='headline total: this implementation, or the paper/fvcore-on-official one')
    parser.add_argument('--breakdown', action='store_true', help='per-operator and DGMN2 breakdown')
    parser.add_argument('--no-pad', action='store_true', help="do not pad like the data preprocessor")
    parser.add_argument('--json', help='also write the result to this JSON file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    shape = None
    if args.shape:
        shape = (args.shape[0], args.shape[0]) if len(args.shape) == 1 else tuple(args.shape[:2])
    res = get_flops(args.config, shape, args.cfg_options, pad=not args.no_pad)
    print(format_result(res, args.convention, args.breakdown))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump({k: (list(v) if isinstance(v, tuple) else v) for k, v in res.items()}, f, indent=2)
    return res


if __name__ == '__main__':
    main()

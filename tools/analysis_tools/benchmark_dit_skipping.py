"""Inference time of the DiT backbone against the fraction of skipped tokens (real skipping).

Usage::

    python tools/analysis_tools/benchmark_dit_skipping.py [--arch b1] [--size 224] [--batch 1]
        [--fractions 0 0.25 0.5 0.75 0.9] [--runs 7] [--warmup 2] [--threads N]

The row gates are replaced by random masks that skip each token with the given probability
(``row_gate='random'``, ``fixed_keep = 1 - fraction``, one gate per node; the column gates stay open so the
amount of work only depends on the row gates). For each fraction, the eval-mode forward is timed with the
sparse path (gather -> compute -> scatter, ``sparse_inference=True``) and with the masked dense path (every
token computed, then masked), as the median (and minimum) of ``--runs`` runs after ``--warmup`` runs, the two
paths alternating. Also printed: the FLOPs the hard gates account for (the ``complexity`` of the output) and
the largest difference between the two paths' outputs on the same masks. The measurement is
:func:`dgmn_mm.analysis.dit.benchmark_skipping`.
"""
import argparse
import os.path as osp
import sys

import torch

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if osp.isdir(osp.join(_ROOT, 'dgmn_mm')):  # run from a source checkout: its dgmn_mm first
    sys.path.insert(0, _ROOT)

from dgmn_mm.analysis.dit import benchmark_skipping, format_skipping_table  # noqa: E402

__all__ = ['parse_args', 'main']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', default='b1', help="DiT arch name ('b1'..'b5')")
    p.add_argument('--size', type=int, default=224, help='square input size')
    p.add_argument('--batch', type=int, default=1)
    p.add_argument('--fractions', type=float, nargs='+', default=[0.0, 0.25, 0.5, 0.75, 0.9])
    p.add_argument('--runs', type=int, default=7)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = benchmark_skipping(args.arch, args.size, args.batch, args.fractions, args.runs, args.warmup, args.seed)
    print(f'DiT-{args.arch.upper()} (random row gates, column gates open), batch {args.batch}, '
          f'{args.size}x{args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'median of {args.runs} runs after {args.warmup} warm-up runs')
    print(format_skipping_table(rows))
    return rows


if __name__ == '__main__':
    main()

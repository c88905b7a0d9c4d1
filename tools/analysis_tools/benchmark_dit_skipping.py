"""Inference time of the DiT backbone against the fraction of skipped tokens (real skipping).

Usage::

    python tools/analysis_tools/benchmark_dit_skipping.py [--arch b1] [--size 224] [--batch 1]
        [--fractions 0 0.25 0.5 0.75 0.9] [--runs 7] [--warmup 2] [--threads N]

The row gates are replaced by random masks that skip each token with the given probability (``row_gate=
'random'``, ``fixed_keep = 1 - fraction``, one gate per node; the column gates stay open so the amount of work only depends on
the row gates). For each fraction, the eval-mode forward is timed with the sparse path (gather -> compute ->
scatter, ``sparse_inference=True``) and with the masked dense path (every token computed, then masked), as
the median (and minimum) of ``--runs`` runs after ``--warmup`` runs, the two paths alternating. Also printed:
the FLOPs the hard gates account for (the ``complexity`` of the output) and the largest difference between the two
paths' outputs on the same masks.
"""
import argparse
import statistics
import time

import torch

from dgmn_mm.models.backbones.dit import DiT


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


def _time_pair(fn_a, fn_b, runs: int, warmup: int):
    """Median and minimum times of two functions, run alternately (a, b, a, b, ...) so that a change of the
    machine's load hits both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(runs):
        t = time.perf_counter()
        fn_a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fn_b()
        tb.append(time.perf_counter() - t)
    return (statistics.median(ta), min(ta)), (statistics.median(tb), min(tb))


def benchmark(arch='b1', size=224, batch=1, fractions=(0.0, 0.25, 0.5, 0.75, 0.9), runs=7, warmup=2, seed=0):
    """Returns a list of dicts, one per fraction. ``arch``: a DiT arch name or dict."""
    torch.manual_seed(seed)
    model = DiT(arch=arch, row_gate='random', col_gate='open').eval()
    x = torch.randn(batch, 3, size, size)
    dense_flops = model.dense_flops((size, size))
    rows = []
    for frac in fractions:
        for gate in model.gates():
            if gate.mode == 'random':
                gate.fixed_keep = 1.0 - frac

        def run(sparse):
            model.sparse_inference = sparse
            with torch.inference_mode():
                return model(x)

        (t_sparse, m_sparse), (t_dense, m_dense) = _time_pair(lambda: run(True), lambda: run(False), runs, warmup)
        # same masks for both paths: reseed before each
        torch.manual_seed(seed + 1)
        out_s = run(True)
        flops = float(out_s.complexity['flops'].mean())
        routed = torch.cat([g.flatten() for g in out_s.routing['row'].values()]).mean().item()
        torch.manual_seed(seed + 1)
        out_d = run(False)
        diff = max((a - b).abs().max().item() for a, b in zip(out_s, out_d))
        rows.append(dict(fraction=frac, skipped=1.0 - routed, gflops=flops / 1e9, dense_gflops=dense_flops / 1e9,
                         ms_sparse=t_sparse * 1e3, ms_dense=t_dense * 1e3, min_ms_sparse=m_sparse * 1e3,
                         min_ms_dense=m_dense * 1e3, max_abs_diff=diff))
    return rows


def format_table(rows, header=True) -> str:
    lines = []
    if header:
        lines.append('| skip prob | skipped tokens | GFLOPs (hard gates) / all open | dense-masked ms (min) | '
                     'sparse ms (min) | sparse / dense (medians) | max abs diff |')
        lines.append('|---|---|---|---|---|---|---|')
    for r in rows:
        lines.append(f"| {r['fraction']:.2f} | {r['skipped']:.3f} | {r['gflops']:.2f} / {r['dense_gflops']:.2f} | "
                     f"{r['ms_dense']:.1f} ({r['min_ms_dense']:.1f}) | "
                     f"{r['ms_sparse']:.1f} ({r['min_ms_sparse']:.1f}) | "
                     f"{r['ms_sparse'] / r['ms_dense']:.2f} | "
                     f"{r['max_abs_diff']:.1e} |")
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = benchmark(args.arch, args.size, args.batch, args.fractions, args.runs, args.warmup, args.seed)
    print(f'DiT-{args.arch.upper()} (random row gates, column gates open), batch {args.batch}, '
          f'{args.size}x{args.size}, torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'median of {args.runs} runs after {args.warmup} warm-up runs')
    print(format_table(rows))
    return rows


if __name__ == '__main__':
    main()

"""Time, peak memory and FLOPs of DGMN2's attention against full, PVTv2 and Swin attention.

    python tools/analysis_tools/benchmark_attention.py                       # everything, ~15-30 min on CPU
    python tools/analysis_tools/benchmark_attention.py --quick                # tiny sizes, seconds
    python tools/analysis_tools/benchmark_attention.py --impls reference,fast --sizes 800x1333 --scope backbone
    python tools/analysis_tools/benchmark_attention.py --mode train --impls reference,fast,pvtv2-sra \
        --scope backbone --sizes 512x512 --batch 2                             # training steps

Implementations (``--impls``):

* ``reference`` / ``fast``: ``DGMN2Attention(attn_impl=...)``; backbone = DGMN2-Tiny.
* ``fast-cpp`` / ``fast-torch`` / ``fast-triton`` (not in the default set): ``fast`` with the operators'
  backend forced (``DGMN_MM_ATTN_BACKEND``, see ``dgmn_mm.ops.backend``): the C++ kernel (CPU), the
  pure-PyTorch implementation, the Triton kernels (CUDA; on CPU the Triton interpreter, only for tiny
  sizes). For a GPU: ``--device cuda --impls reference,fast-torch,fast-triton``. GPU numbers have not been
  measured for this project (no GPU where it was developed).
* ``full``: global softmax attention over all N tokens (Non-local style, the N x N map is materialised);
  backbone = DGMN2-Tiny with every DGMN2 attention replaced by it (same widths and heads).
* ``pvtv2-sra``: mmdet's ``SpatialReductionAttention`` (sr_ratio 8 at stage-1 width); backbone = mmdet's
  ``PyramidVisionTransformerV2`` b1 (the same widths 64/128/320/512, heads, depths and MLP ratios as
  DGMN2-Tiny).
* ``swin-window``: mmdet's ``ShiftWindowMSA`` (7 x 7 windows, no shift); backbone = mmdet's
  ``SwinTransformer`` with DGMN2-Tiny-like widths 64/128/256/512, heads 1/2/4/8, depths 2/2/2/2, MLP 4.

Scopes: ``layer`` = one attention layer at the stage-1 width (C = 64, 1 head) on the stage-1 map of the
image (stride 4); ``backbone`` = the whole backbone forward on a (1, 3, H, W) image. ``tokens`` is the
number of stage-1 tokens in both cases (per image).

Modes (``--mode``): ``infer`` (default) = one forward in eval mode under ``torch.no_grad()``; ``train`` = one
training step without the optimiser: the model in train mode (BatchNorm in training, dropout rates 0),
forward, ``sum(out.mean())`` over the outputs, backward, gradients dropped (``p.grad = None``); the layer's
input requires a gradient too. ``--batch`` images per step (default 1).

Time: median of ``--runs`` forwards after ``--warmup`` ones (``--clock wall``: ``perf_counter``;
``--clock cpu``: process CPU time, less sensitive to other processes on a shared machine, meaningful
with ``--threads 1``). The cases of a scope are timed in interleaved rounds (one forward of every case per
round), so that a drift of the machine's speed during the run does not bias the ratios.

Peak memory (CPU): the growth of the process's resident set during one extra forward: the kernel's
high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` just before the forward, and
``peak_mb = VmHWM_after - VmRSS_before`` (weights and input are already resident, so this is activations
and temporaries). glibc is told to serve every allocation above 64 kB with ``mmap`` (``mallopt``) so that
freed blocks leave the resident set and are not silently reused. That allocator setting makes every large
allocation page-fault again on every forward (about +1 s on an 800 x 1333 backbone forward, for either
DGMN2 path), so it is applied only after all the timings: the run has two passes, first time and FLOPs of
every case with the default allocator (what a user runs with), then peak memory of every case (after one
warm-up forward) in a fresh process that sets the allocator before anything else (set after other
forwards, it finds a fragmented heap and over-reports by ~40 MB). On CUDA: ``torch.cuda`` allocator stats.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (2 x multiply-accumulates of every matmul, linear,
conv, bmm) on one forward, plus, for DGMN2, the analytical cost of the sampled attention core (which runs
in a C++ kernel the counter cannot see): ``2 N h K (2d + 8d + d + d)`` = RelPos (two 9-row terms) +
bilinear sampling of k and v (4 corners each) + logits + weighted sum, K = 9 (see
``dgmn_mm.models.layers.sampled_attention.dgmn2_attention_flops``). ``reference`` and ``fast`` compute
the same maths and report the same FLOPs. Softmax, norms and activations are counted for no model.

Outputs in ``--out`` (default ``work_dirs/bench``): ``attention_benchmark.csv`` with the columns
``mode,scope,impl,batch,height,width,tokens,ms_median,peak_mb,gflops`` (``gflops``: one forward, in both
modes), ``attention_benchmark.png`` (log-log time and memory against tokens) and ``summary.json`` (the
ratios of the targets and the run conditions); ``--mode train`` writes ``attention_benchmark_train.*`` and
``summary_train.json``.
"""
import argparse
import csv
import ctypes
import gc
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time

import torch
import torch.nn as nn

if __package__ in (None, ''):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

ALL_IMPLS = ('reference', 'fast', 'full', 'pvtv2-sra', 'swin-window')
# 'fast' with a forced operator backend (DGMN_MM_ATTN_BACKEND set around each step); not in the default set
BACKEND_IMPLS = ('fast-cpp', 'fast-torch', 'fast-triton')
DEFAULT_SIZES = '224x224,448x448,512x1024,800x1333,1024x2048'
QUICK_SIZES = '32x32,64x64,64x128'
MODES = ('infer', 'train')
CSV_COLUMNS = ['mode', 'scope', 'impl', 'batch', 'height', 'width', 'tokens', 'ms_median', 'peak_mb', 'gflops']


# --------------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------------
class FullAttention(nn.Module):
    """Global multi-head softmax attention over all N tokens (Non-local style, materialises N x N)."""

    def __init__(self, embed_dims: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (embed_dims // num_heads) ** -0.5
        self.qkv = nn.Linear(embed_dims, embed_dims * 3)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x, hw_shape=None):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


def stage1_hw(height: int, width: int):
    """Stage-1 map of DGMN2's conv stem (two stride-2 3x3 convs, padding 1)."""
    h, w = height, width
    for _ in range(2):
        h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    return h, w


def build_layer(impl: str):
    C, heads = 64, 1
    if impl in ('reference', 'fast'):
        from dgmn_mm.models.backbones.dgmn2 import DGMN2Attention
        return DGMN2Attention(C, heads, (56, 56), attn_impl=impl)
    if impl == 'full':
        return FullAttention(C, heads)
    if impl == 'pvtv2-sra':
        from mmdet.models.backbones.pvt import SpatialReductionAttention
        return SpatialReductionAttention(C, heads, sr_ratio=8)
    if impl == 'swin-window':
        from mmdet.models.backbones.swin import ShiftWindowMSA
        return ShiftWindowMSA(C, heads, window_size=7, shift_size=0)
    raise ValueError(impl)


def build_backbone(impl: str):
    if impl in ('reference', 'fast', 'full'):
        from dgmn_mm.models.backbones.dgmn2 import DGMN2
        model = DGMN2(arch='tiny', attn_impl='fast' if impl == 'full' else impl)
        if impl == 'full':
            for stage in model.stages:
                for blk in stage.blocks:
                    blk.attn = FullAttention(blk.attn.embed_dims, blk.attn.num_heads)
        return model
    if impl == 'pvtv2-sra':
        from mmdet.models.backbones.pvt import PyramidVisionTransformerV2
        return PyramidVisionTransformerV2(embed_dims=64, num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
                                          sr_ratios=[8, 4, 2, 1], mlp_ratios=[8, 8, 4, 4])
    if impl == 'swin-window':
        from mmdet.models.backbones.swin import SwinTransformer
        return SwinTransformer(embed_dims=64, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=7,
                               mlp_ratio=4)
    raise ValueError(impl)


def estimate_bytes(scope: str, impl: str, tokens: int, mode: str = 'infer', batch: int = 1) -> float:
    """Rough upper bound of the transient memory, to skip what cannot fit (full attention's N x N map)."""
    factor = batch * (3 if mode == 'train' else 1)  # training keeps activations and their gradients
    if impl == 'full':
        return factor * 3 * 4. * tokens ** 2  # logits, softmax, temporaries of stage 1
    return factor * 4. * tokens * 64 * 9 * 6  # DGMN2 reference: a few (N, d, 9) tensors; others far smaller


# --------------------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------------------
def _setup_malloc():
    """Serve allocations > 64 kB with mmap so that freed memory leaves the resident set (glibc only)."""
    try:
        libc = ctypes.CDLL('libc.so.6')
        M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = -3, -1
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        return libc
    except OSError:
        return None


def _status_kb(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise KeyError(field)


def peak_memory_mb(fn, device, libc=None) -> float:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    if libc is not None:
        libc.malloc_trim(0)
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')  # reset VmHWM to the current RSS
    except OSError:
        return float('nan')
    before = _status_kb('VmRSS')
    fn()
    return (_status_kb('VmHWM') - before) / 1024.


def count_flops(fn, model) -> float:
    """FLOPs of one forward: FlopCounterMode + the analytical DGMN2 attention core (see module doc)."""
    from torch.utils.flop_counter import FlopCounterMode
    from dgmn_mm.models.backbones.dgmn2 import DGMN2Attention
    from dgmn_mm.models.layers.sampled_attention import NUM_SAMPLES, dgmn2_core_flops
    extra = [0]
    hooks = []

    def hook(mod, args, out):
        x, (H, W) = args[0], args[1]
        N, h, d, K = H * W, mod.num_heads, mod.head_dims, NUM_SAMPLES
        extra[0] += x.shape[0] * dgmn2_core_flops(N, h, d, K)

    for m in model.modules():
        if isinstance(m, DGMN2Attention):
            assert m.attn_impl == 'fast', 'count FLOPs on the fast path (the reference einsums would be counted)'
            hooks.append(m.register_forward_hook(hook))
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        for h in hooks:
            h.remove()
    return counter.get_total_flops() + extra[0]


def build_model(scope, impl, device, mode='infer'):
    torch.manual_seed(0)
    backend = impl[len('fast-'):] if impl in BACKEND_IMPLS else None
    impl = 'fast' if backend else impl
    model = (build_layer(impl) if scope == 'layer' else build_backbone(impl)).to(device)
    model._attn_backend = backend  # read by step_fn
    model.train(mode == 'train')  # (mmdet's Swin.train() returns None)
    return model


def make_input(scope, height, width, device, batch=1, mode='infer'):
    h1, w1 = stage1_hw(height, width)
    torch.manual_seed(0)
    if scope == 'layer':  # in a network the layer's input requires a gradient
        return torch.randn(batch, h1 * w1, 64, device=device).requires_grad_(mode == 'train'), (h1, w1)
    return torch.randn(batch, 3, height, width, device=device), None


def forward_fn(model, x, hw):
    return (lambda: model(x, hw)) if hw is not None else (lambda: model(x))


def step_fn(model, x, hw, mode='infer'):
    """:func:`_plain_step_fn`, with the operators' backend forced during the step for the ``fast-*`` impls
    (cases are interleaved, so the environment variable is set around each step, backward included)."""
    step = _plain_step_fn(model, x, hw, mode)
    backend = getattr(model, '_attn_backend', None)
    if not backend:
        return step

    def forced():
        prev = os.environ.get('DGMN_MM_ATTN_BACKEND')
        os.environ['DGMN_MM_ATTN_BACKEND'] = backend
        try:
            return step()
        finally:
            if prev is None:
                os.environ.pop('DGMN_MM_ATTN_BACKEND')
            else:
                os.environ['DGMN_MM_ATTN_BACKEND'] = prev
    return forced


def _plain_step_fn(model, x, hw, mode='infer'):
    """One measured step: an inference forward, or forward + backward of ``sum(out.mean())``."""
    fwd = forward_fn(model, x, hw)
    if mode == 'infer':
        def infer():
            with torch.no_grad():
                return fwd()
        return infer
    params = [p for p in model.parameters() if p.requires_grad]

    def train():
        out = fwd()
        outs = out if isinstance(out, (tuple, list)) else (out, )
        sum(o.float().mean() for o in outs).backward()
        for p in params:
            p.grad = None
        x.grad = None
    return train


def new_row(scope, impl, height, width, args):
    h1, w1 = stage1_hw(height, width)
    row = dict(mode=args.mode, scope=scope, impl=impl, batch=args.batch, height=height, width=width,
               tokens=h1 * w1, ms_median=float('nan'), peak_mb=float('nan'), gflops=float('nan'))
    if estimate_bytes(scope, impl, h1 * w1, args.mode, args.batch) > args.mem_limit_gb * 2 ** 30:
        row['skipped'] = 'memory'
    return row


def time_pass(rows, args, device):
    """Fill ``ms_median`` of every row of one scope, timed in interleaved rounds.

    Each round runs one step (forward, or training step) of every case in turn (``--warmup`` rounds first, then ``--runs`` timed
    ones) and the median over the rounds is kept. On a shared VM the machine's speed drifts by 10-20 %
    over minutes (other tenants, clocks); measured one case after the other, such a drift lands on
    whichever cases ran during it and distorts the ratios between sizes and implementations. Interleaved,
    it hits every case alike.
    """
    tick = time.process_time if args.clock == 'cpu' else time.perf_counter
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    models, inputs, cases = {}, {}, []
    for r in rows:
        if r.get('skipped'):
            continue
        key = (r['scope'], r['impl'])
        if key not in models:
            models[key] = build_model(r['scope'], r['impl'], device, args.mode)
        size = (r['scope'], r['height'], r['width'])
        if size not in inputs:
            inputs[size] = make_input(*size, device, args.batch, args.mode)
        cases.append((r, step_fn(models[key], *inputs[size], args.mode), []))
    for rnd in range(args.warmup + args.runs):
        for row, fn, times in cases:
            sync()
            t0 = tick()
            fn()
            sync()
            if rnd >= args.warmup:
                times.append((tick() - t0) * 1e3)
        print(f'  round {rnd + 1}/{args.warmup + args.runs} done', flush=True)
    for row, _, times in cases:
        row['ms_median'] = statistics.median(times)
    del models, inputs, cases
    gc.collect()


def flops_pass(rows, device):
    """Fill ``gflops`` (one forward, eval mode, in both modes); 'reference' is counted on a 'fast' twin (same
    maths, the einsums would be counted)."""
    with torch.no_grad():
        for r in rows:
            if r.get('skipped'):
                continue
            model = build_model(r['scope'], 'fast' if r['impl'] == 'reference' else r['impl'], device)
            r['gflops'] = count_flops(forward_fn(model, *make_input(r['scope'], r['height'], r['width'],
                                                                    device, r['batch'])), model) / 1e9
            del model
            gc.collect()


def memory_pass(cases, threads, device_name, mode='infer', batch=1):
    """Peak memory of each (scope, impl, height, width) step; meant to run in a fresh (spawned) process."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device_name)
    libc = _setup_malloc() if device.type == 'cpu' else None
    import dgmn_mm  # noqa: F401
    peaks = []
    for scope, impl, height, width in cases:
        model = build_model(scope, impl, device, mode)
        fn = step_fn(model, *make_input(scope, height, width, device, batch, mode), mode)
        fn()  # warm-up: one-time buffers (thread pools, kernel caches) are not activations
        peaks.append(peak_memory_mb(fn, device, libc))
        del model, fn
        gc.collect()
        print(f'memory   {scope:8s} {impl:12s} {height:5d}x{width:<5d} {peaks[-1]:9.1f} MB', flush=True)
    return peaks


# --------------------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------------------
def _get(rows, scope, impl, size):  # rows of one run share mode and batch
    for r in rows:
        if r['scope'] == scope and r['impl'] == impl and (r['height'], r['width']) == size \
                and not math.isnan(r['ms_median']):
            return r
    return None


def summarize(rows, sizes):
    """The ratios of the targets that this run can answer (keys start with 'train_' in train mode)."""
    out = {}
    pre = 'train_' if rows and rows[0]['mode'] == 'train' else ''
    det = (800, 1333) if (800, 1333) in sizes else max(sizes, key=lambda s: s[0] * s[1])
    for scope in ('backbone', 'layer'):
        ref, fast = _get(rows, scope, 'reference', det), _get(rows, scope, 'fast', det)
        if ref and fast:
            out[f'{pre}{scope}_{det[0]}x{det[1]}_speedup_fast_vs_reference'] = \
                ref['ms_median'] / fast['ms_median']
            out[f'{pre}{scope}_{det[0]}x{det[1]}_peak_memory_fast_over_reference'] = \
                fast['peak_mb'] / ref['peak_mb']
        for bimpl in BACKEND_IMPLS:  # forced operator backends against the reference path
            rb = _get(rows, scope, bimpl, det)
            if ref and rb:
                out[f'{pre}{scope}_{det[0]}x{det[1]}_speedup_{bimpl}_vs_reference'] = ref['ms_median'] / rb['ms_median']
                if rb.get('peak_mb') and ref.get('peak_mb'):
                    out[f'{pre}{scope}_{det[0]}x{det[1]}_peak_memory_{bimpl}_over_reference'] = \
                        rb['peak_mb'] / ref['peak_mb']
        pvt = _get(rows, scope, 'pvtv2-sra', det)
        if fast and pvt and pre:
            out[f'{pre}{scope}_{det[0]}x{det[1]}_speedup_fast_vs_pvtv2'] = pvt['ms_median'] / fast['ms_median']
            out[f'{pre}{scope}_{det[0]}x{det[1]}_peak_memory_fast_over_pvtv2'] = fast['peak_mb'] / pvt['peak_mb']
        if fast and pvt and not pre:
            out[f'{scope}_{det[0]}x{det[1]}_gflop_per_s_fast'] = fast['gflops'] / fast['ms_median'] * 1e3
            out[f'{scope}_{det[0]}x{det[1]}_gflop_per_s_pvtv2'] = pvt['gflops'] / pvt['ms_median'] * 1e3
        # linearity: every pair of sizes whose token counts differ by ~4x
        for impl in ('fast', 'reference'):
            for a in sizes:
                for b in sizes:
                    ra, rb = _get(rows, scope, impl, a), _get(rows, scope, impl, b)
                    if ra and rb and 3.8 <= rb['tokens'] / ra['tokens'] <= 4.2:
                        out[f'{pre}{scope}_{impl}_time_ratio_{a[0]}x{a[1]}_to_{b[0]}x{b[1]}'] = \
                            rb['ms_median'] / ra['ms_median']
                        out[f'{pre}{scope}_{impl}_token_ratio_{a[0]}x{a[1]}_to_{b[0]}x{b[1]}'] = \
                            rb['tokens'] / ra['tokens']
    return out


def plot(rows, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    scopes = [s for s in ('layer', 'backbone') if any(r['scope'] == s for r in rows)]
    fig, axes = plt.subplots(len(scopes), 2, figsize=(11, 4.2 * len(scopes)), squeeze=False)
    for i, scope in enumerate(scopes):
        for impl in ALL_IMPLS:
            pts = sorted((r['tokens'], r['ms_median'], r['peak_mb']) for r in rows
                         if r['scope'] == scope and r['impl'] == impl and not math.isnan(r['ms_median']))
            if not pts:
                continue
            tok = [p[0] for p in pts]
            axes[i, 0].plot(tok, [p[1] for p in pts], 'o-', label=impl)
            mem = [(t, p[2]) for t, p in zip(tok, pts) if p[2] > 0]
            if mem:
                axes[i, 1].plot([m[0] for m in mem], [m[1] for m in mem], 'o-', label=impl)
        step = 'training step' if rows[0]['mode'] == 'train' else 'forward'
        for j, ylabel in enumerate((f'time per {step} (ms)', 'peak memory (MB)')):
            ax = axes[i, j]
            ax.set_xscale('log')
            ax.set_yscale('log')
            ax.set_xlabel('stage-1 tokens (H/4 x W/4)')
            ax.set_ylabel(ylabel)
            ax.set_title(f'{scope}: {ylabel.split(" (")[0]}')
            ax.grid(True, which='both', alpha=.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--impls', default=','.join(ALL_IMPLS),
                   help=f'comma list of {ALL_IMPLS} or of the forced attention backends {BACKEND_IMPLS}')
    p.add_argument('--sizes', default=None, help=f'comma list of HxW (default {DEFAULT_SIZES})')
    p.add_argument('--scope', default='both', choices=('layer', 'backbone', 'both'))
    p.add_argument('--mode', default='infer', choices=MODES,
                   help='infer: eval forward under no_grad; train: forward + backward in train mode')
    p.add_argument('--batch', type=int, default=1, help='images per step (default 1)')
    p.add_argument('--quick', action='store_true', help=f'tiny sizes ({QUICK_SIZES}), 1 warm-up, 2 runs')
    p.add_argument('--runs', type=int, default=None, help='timed runs (median), default 5 (2 with --quick)')
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: unchanged)')
    p.add_argument('--clock', default='wall', choices=('wall', 'cpu'))
    p.add_argument('--mem-limit-gb', type=float, default=6., help='skip configs estimated above this')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (time with synchronisation, peak memory "
                   "from torch.cuda.max_memory_allocated)")
    p.add_argument('--out', default='work_dirs/bench')
    p.add_argument('--no-plot', action='store_true')
    args = p.parse_args(argv)
    args.impls = [s.strip() for s in args.impls.split(',') if s.strip()]
    bad = [s for s in args.impls if s not in ALL_IMPLS + BACKEND_IMPLS]
    if bad:
        p.error(f'unknown impls {bad}; choose from {ALL_IMPLS + BACKEND_IMPLS}')
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    try:
        args.sizes = [tuple(int(v) for v in s.lower().split('x')) for s in sizes.split(',') if s.strip()]
        assert all(len(s) == 2 and min(s) > 0 for s in args.sizes)
    except (ValueError, AssertionError):
        p.error(f'--sizes must be a comma list of HxW, got {sizes!r}')
    if args.batch < 1:
        p.error(f'--batch must be >= 1, got {args.batch}')
    if args.runs is None:
        args.runs = 2 if args.quick else 5
    return args


def write_csv(path, rows):
    """Written after the timing pass and again after the memory pass, so that a partial run survives."""
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction='ignore')
        w.writeheader()
        for row in rows:
            w.writerow({k: (f'{v:.4f}' if isinstance(v, float) else v) for k, v in row.items()})


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import dgmn_mm  # noqa: F401  (registers the models)
    from dgmn_mm.models.layers.sampled_attention import extension_available
    os.makedirs(args.out, exist_ok=True)
    scopes = ('layer', 'backbone') if args.scope == 'both' else (args.scope, )
    suffix = '_train' if args.mode == 'train' else ''
    csv_path = os.path.join(args.out, f'attention_benchmark{suffix}.csv')
    cases = [(scope, impl, size) for scope in scopes for size in args.sizes for impl in args.impls]
    t_start = time.time()
    # pass 1, time (interleaved rounds per scope) and FLOPs, with the default allocator (what a user runs
    # with)
    rows = [new_row(scope, impl, size[0], size[1], args) for scope, impl, size in cases]
    for scope in scopes:
        print(f'timing {scope} ({args.mode}, batch {args.batch}): {args.warmup} + {args.runs} rounds', flush=True)
        time_pass([r for r in rows if r['scope'] == scope], args, device)
    flops_pass(rows, device)
    for r in rows:
        print(f"time     {r['mode']:5s} {r['scope']:8s} {r['impl']:12s} {r['height']:5d}x{r['width']:<5d} tokens "
              f"{r['tokens']:7d}  {r['ms_median']:10.1f} ms  {r['gflops']:8.2f} GFLOPs"
              + ('  (skipped: memory)' if r.get('skipped') else ''), flush=True)
    write_csv(csv_path, rows)
    # pass 2, peak memory, in a fresh process whose allocator serves blocks > 64 kB with mmap from its start
    # (that setting would inflate the times of pass 1, and set after forwards it finds a fragmented heap)
    todo = [(r['scope'], r['impl'], r['height'], r['width']) for r in rows if not r.get('skipped')]
    with multiprocessing.get_context('spawn').Pool(1) as pool:
        peaks = pool.apply(memory_pass, (todo, args.threads, args.device, args.mode, args.batch))
    for r in rows:
        if not r.get('skipped'):
            r['peak_mb'] = peaks.pop(0)
    write_csv(csv_path, rows)
    summary = dict(
        ratios=summarize(rows, args.sizes),
        conditions=dict(mode=args.mode, batch=args.batch, torch=torch.__version__, threads=torch.get_num_threads(), clock=args.clock,
                        runs=args.runs, warmup=args.warmup, device=str(device), cpu=platform.processor() or
                        platform.machine(), nproc=os.cpu_count(), loadavg_end=os.getloadavg(),
                        cpp_extension=extension_available(), wall_s=time.time() - t_start))
    with open(os.path.join(args.out, f'summary{suffix}.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    for k, v in summary['ratios'].items():
        print(f'{k}: {v:.3f}')
    if not args.no_plot:
        plot(rows, os.path.join(args.out, f'attention_benchmark{suffix}.png'))
    print(f'wrote {csv_path}' + ('' if args.no_plot else f' and attention_benchmark{suffix}.png')
          + f' and summary{suffix}.json')
    return rows


if __name__ == '__main__':
    main()

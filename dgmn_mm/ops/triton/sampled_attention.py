"""Triton kernels of the DGMN2 sampled attention (forward and hand-written backward).

The maths (Zhang et al., "Dynamic Graph Message Passing Networks for Visual Recognition", TPAMI 2022,
Sec. 4, Eqs. 4, 8 and 9; official code github.com/fudan-zvg/DGMN2): for every batch b, head j and query
n = (y, x) of an H x W map, the K = 9 taps t = (a, c) of the 3 x 3 neighbourhood move by the predicted walks
(dy_t, dx_t)::

    p_t      = (y - 1 + a + dy_t, x - 1 + c + dx_t)                  (pixels)
    k_t, v_t = bilinear samples of the key / value maps at p_t         (zeros outside the map, DCNv1 rule)
    l_t      = scale * <q_n, k_t> + pos[b, j, n, t]
    out[n]   = sum_t softmax(l)_t v_t

Tensor contracts (the same as the C++ extension ``forward`` / ``backward``):

* ``qkv`` (B, N, 3C), N = H W, channels ``[q | k | v]``, each split into h chunks of d = C / h (the output of
  the attention's ``qkv`` Linear, read in place: channels-last, so a bilinear corner is d contiguous numbers);
* ``walk`` (B, N, h, 18): (dy, dx) pairs per tap, in pixels;
* ``pos`` (B, h, N, 9): the relative-position term added to the logits;
* ``out`` (B, N, C): the layout the ``proj`` Linear consumes; ``attn`` (B, h, N, 9): the softmax weights.

Kernel design
-------------
* Grid ``(cdiv(N, BLOCK_N), B * h)``: one program per block of BLOCK_N consecutive queries of one
  (batch, head). Neighbouring programs work on neighbouring queries, whose bilinear corners overlap, so the
  gathers of one wave of programs hit the same cache lines.
* A program works on (BLOCK_N, 16) tiles of (query, tap) pairs (the 9 taps padded to 16 masked lanes) and on
  (BLOCK_N, 16, BLOCK_D) tiles of sampled rows, BLOCK_D = the next power of two >= d with the extra
  channels masked (any d works; DGMN2 uses d = 64: C / h = 64/1, 128/2, 320/5, 512/8). A corner read is a
  gather whose rows are d contiguous numbers of qkv (coalesced; 16-byte vector loads when d and C are
  multiples of 16); pos and attn are 9 contiguous numbers per query, the walks 18.
* The geometry (positions, floors, bilinear weights, validity) of all 9 taps is computed once per program;
  the 4 bilinear corners are a loop (not unrolled, to bound the live registers).
* Forward: pass 1 gathers the keys of the 4 corners, forms the 9 logits and the softmax in registers;
  pass 2 gathers the values and accumulates ``a_t w_k v_k``. Nothing of size N x 9 x d is ever in memory;
  the only extra output is ``attn`` (B, h, N, 9) in fp32, which the backward needs.
* Backward: recomputes the sampling from qkv, the walks and ``attn``. Pass 1 gathers the values (and the
  keys when the walk gradient is needed) for ``dL/da_t = <g_out, v_t>`` and the walk terms, and scatters
  the value gradient ``a_t w_k g_out``; the softmax backward gives ``dL/dl_t`` (the pos gradient); pass 2
  gathers the keys again for the q gradient (each program owns its queries' q rows: plain store) and
  scatters the key gradient ``scale dL/dl_t w_k q``. The walk gradient belongs to its query (plain store).
  Key and value gradients go into an fp32 buffer with ``tl.atomic_add`` (corners of different queries
  collide, within and across programs).
* GPU sizing: (BLOCK_N, 16, BLOCK_D) tiles of 4096 fp32 numbers in the forward, 2048 in the backward, 4
  warps (BLOCK_N = 4 / 2 for d = 64). Compiled offline for sm_80 (``triton.compile``, Triton 3.8, d = 64,
  fp32) the forward takes 143 registers per thread and the backward 219, with no spills; twice the
  backward tile spills.
* Precision: qkv may be fp32, fp16 or bf16; walks and pos fp32, fp16 or bf16; everything is computed and
  accumulated in fp32 (float64 is refused: use the C++ or PyTorch path for it).
* Sampling positions follow the very same float steps as the PyTorch reference on CPU
  (``node_sampling.walk_to_grid``, then ATen's CPU ``grid_sampler`` un-normalisation with
  align_corners=False): ``g = (2 p + 1) / size - 1``, ``i = (g + 1) * (size / 2) - 0.5``, with IEEE
  division (``tl.math.div_rn``) and, on a GPU, the kernels compiled with ``enable_fp_fusion=False`` so no
  step is contracted into an FMA. The positions are therefore bit-identical to the C++ kernel's and the
  reference's on CPU. This matters for the walk gradient, which is one-sided at integer positions. ATen's
  CUDA ``grid_sampler`` un-normalises as ``((g + 1) size - 1) / 2``, so a PyTorch reference run on a GPU
  may sample up to an ulp apart.
* Outside the map the DCNv1 rule applies as in the C++ kernel: a sample with ``i <= -1`` or ``i >= size``
  (either axis) is zero with zero walk gradient. ``grid_sample`` agrees except at exactly ``i = -1``
  (e.g. a tap one pixel above or left of the map with an integer walk), where its walk gradient is the
  one-sided derivative from the in-map corner of weight 0.

Determinism: the forward, the q, pos and walk gradients are deterministic. The key/value gradients are
summed with floating-point atomics in an order that depends on the GPU's scheduling, so they may differ
in the last bits from run to run on a GPU (under the CPU interpreter programs run in a fixed order).

CPU: on CPU tensors (and on any tensors with ``TRITON_INTERPRET=1``) the kernels run under Triton's
interpreter (numpy, one program at a time, about 0.1 s per program): correct but slow, for testing. This
does not need ``TRITON_INTERPRET=1`` at import: the kernels are plain functions wrapped per device on
first use, and reduce with ``tl.reduce`` and triton's own combine functions (``tl.sum`` / ``tl.max`` /
``tl.zeros`` are jit functions that only the interpreter built at import time could call).

NOT measured: no GPU was available when this was written. Speed and memory on CUDA are unmeasured; the
kernels were run only under the interpreter and compiled (not run) for sm_80; the block sizes and warp
counts are reasoned defaults, not tuned.
"""
import os
from typing import Dict, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from triton.runtime.jit import JITFunction

__all__ = ['sampled_attention_fwd', 'sampled_attention_bwd']

NUM_TAPS = 9  # K: the 3 x 3 neighbourhood
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------------------
# Kernels. They are plain functions, wrapped on first use as a compiled ``JITFunction`` (CUDA tensors) or
# as an ``InterpretedFunction`` (CPU tensors or TRITON_INTERPRET=1), so the same module serves both without
# depending on the environment at import time. The program's tile, the tap geometry and the bilinear
# corners, shared by the forward and the backward, are device functions that both kernel flavours call
# (``_DeviceFunction``).
# --------------------------------------------------------------------------------------------------------
class _DeviceFunction(JITFunction):
    """A Triton device function callable from a compiled and from an interpreted kernel.

    A compiled kernel finds a ``JITFunction`` in its globals and Triton inlines the call into the kernel
    (compiled offline for sm_80: the same instruction counts, 143 / 219 registers and no spills as with the
    bodies written out in each kernel; only the instruction order differs). An interpreted kernel calls the
    object as a Python function: the call runs the body under Triton's interpreter, as a ``triton.jit``
    function defined with ``TRITON_INTERPRET=1`` would (``triton.jit`` then returns an
    ``InterpretedFunction``, whose call is the interpreter's device-function call).
    """

    def __call__(self, *args, **kwargs):
        interpreted = self.__dict__.get('_interpreted')
        if interpreted is None:
            from triton.runtime.interpreter import InterpretedFunction
            interpreted = self._interpreted = InterpretedFunction(self.fn)
        return interpreted(*args, **kwargs)


@_DeviceFunction
def _program_tile(N, NH, D, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """What a program of the grid ``(cdiv(N, BLOCK_N), B * h)`` works on.

    Returns:
        tuple: ``b`` (int64 batch index), ``j`` (head), ``offs_n`` (its BLOCK_N queries) and ``nmask``,
        ``offs_d`` (BLOCK_D channels of a head) and ``dmask`` (< D), ``taps`` (the 9 taps padded to 16
        lanes) and ``nt_mask`` (BLOCK_N, 16) of the real (query, tap) pairs.
    """
    bj = tl.program_id(1)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = offs_n < N
    offs_d = tl.arange(0, BLOCK_D)
    taps = tl.arange(0, 16)
    return ((bj // NH).to(tl.int64), bj % NH, offs_n, nmask, offs_d, offs_d < D, taps,
            nmask[:, None] & (taps < 9)[None, :])


@_DeviceFunction
def _tap_geometry(walk_ptr, b, j, offs_n, taps, nt_mask, N, W, NH, Hf, Wf, BLOCK_N: tl.constexpr):
    """Sampling geometry of the (BLOCK_N, 16) (query, tap) pairs of one (batch b, head j): the walk offsets,
    the DCNv1 validity, the integer top-left corner and the bilinear fractions, following
    ``node_sampling.walk_to_grid`` and ATen's CPU ``grid_sampler`` un-normalisation (align_corners=False)
    float step by float step.

    Returns:
        tuple: ``walk_off`` (offsets of the dy of each pair in ``walk``), ``inside`` (the sample is not zero
        by the DCNv1 rule), ``y0``, ``x0`` (int32 top-left corner), ``dn``, ``dw``, ``ds``, ``de`` (weights
        of the south / east / north / west neighbours), ``hv``, ``wv`` (H, W broadcast to the tile).
    """
    walk_off = (((b * N + offs_n) * NH + j) * 18)[:, None] + 2 * taps[None, :]
    dy = tl.load(walk_ptr + walk_off, mask=nt_mask, other=0.).to(tl.float32)
    dx = tl.load(walk_ptr + walk_off + 1, mask=nt_mask, other=0.).to(tl.float32)
    hv = tl.full((BLOCK_N, 16), 0., tl.float32) + Hf
    wv = tl.full((BLOCK_N, 16), 0., tl.float32) + Wf
    py = ((offs_n // W)[:, None] + (taps // 3 - 1)[None, :]).to(tl.float32) + dy
    px = ((offs_n % W)[:, None] + (taps % 3 - 1)[None, :]).to(tl.float32) + dx
    iy = (tl.math.div_rn(2. * py + 1., hv) - 1. + 1.) * (Hf * 0.5) - 0.5
    ix = (tl.math.div_rn(2. * px + 1., wv) - 1. + 1.) * (Wf * 0.5) - 0.5
    inside = nt_mask & (iy > -1.) & (iy < Hf) & (ix > -1.) & (ix < Wf)  # DCNv1 rule: else all zero
    iy = tl.where(inside, iy, 0.)
    ix = tl.where(inside, ix, 0.)
    y0f = tl.floor(iy)
    x0f = tl.floor(ix)
    dn = iy - y0f
    dw = ix - x0f
    return walk_off, inside, y0f.to(tl.int32), x0f.to(tl.int32), dn, dw, 1. - dn, 1. - dw, hv, wv


@_DeviceFunction
def _corner(k, y0, x0, dn, dw, ds, de, inside, H, W, C3, offs_d):
    """Bilinear corner k (0 NW, 1 NE, 2 SW, 3 SE) of every (query, tap) pair.

    Returns:
        tuple: ``wy``, ``wx`` (its weight is ``wy * wx``), ``valid`` (inside the map) and ``roff``
        (BLOCK_N, 16, BLOCK_D) offsets of its row in a (N, 3C) map, 0 where not valid.
    """
    yk = y0 + k // 2
    xk = x0 + k % 2
    wy = tl.where(k // 2 == 0, ds, dn)
    wx = tl.where(k % 2 == 0, de, dw)
    valid = inside & (yk >= 0) & (yk < H) & (xk >= 0) & (xk < W)
    roff = tl.where(valid, yk * W + xk, 0).to(tl.int64)[:, :, None] * C3 + offs_d[None, None, :]
    return wy, wx, valid, roff


def _sampled_attention_fwd_kernel(
        qkv_ptr, walk_ptr, pos_ptr, out_ptr, attn_ptr,
        N, H, W, C, NH, D, Hf, Wf, scale,
        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    b, j, offs_n, nmask, offs_d, dmask, taps, nt_mask = _program_tile(N, NH, D, BLOCK_N, BLOCK_D)
    C3 = 3 * C
    qkv_b = qkv_ptr + b * N * C3
    q = tl.load(qkv_b + offs_n.to(tl.int64)[:, None] * C3 + j * D + offs_d[None, :],
                mask=nmask[:, None] & dmask[None, :], other=0.).to(tl.float32)
    # ---- sampling geometry of the (BLOCK_N, 16) (query, tap) pairs
    walk_off, inside, y0, x0, dn, dw, ds, de, hv, wv = _tap_geometry(
        walk_ptr, b, j, offs_n, taps, nt_mask, N, W, NH, Hf, Wf, BLOCK_N)
    # ---- pass 1: sampled keys (BLOCK_N, 16, BLOCK_D) -> logits -> softmax
    k_base = qkv_b + C + j * D
    v_base = qkv_b + 2 * C + j * D
    ks = tl.full((BLOCK_N, 16, BLOCK_D), 0., tl.float32)
    for k in tl.range(0, 4):
        wy, wx, valid, roff = _corner(k, y0, x0, dn, dw, ds, de, inside, H, W, C3, offs_d)
        wk = wy * wx
        krow = tl.load(k_base + roff, mask=valid[:, :, None] & dmask[None, None, :], other=0.).to(tl.float32)
        ks += wk[:, :, None] * krow
    attn_off = (((b * NH + j) * N + offs_n) * 9)[:, None] + taps[None, :]
    pos = tl.load(pos_ptr + attn_off, mask=nt_mask, other=0.).to(tl.float32)
    logits = tl.reduce(q[:, None, :] * ks, 2, tl.standard._sum_combine) * scale + pos
    logits = tl.where((taps < 9)[None, :], logits, float('-inf'))
    mx = tl.reduce(logits, 1, tl.standard._elementwise_max)
    e = tl.exp(logits - mx[:, None])
    p = e / tl.reduce(e, 1, tl.standard._sum_combine)[:, None]
    tl.store(attn_ptr + attn_off, p, mask=nt_mask)
    # ---- pass 2: out = sum_t a_t sum_k w_k v_k at the same positions
    acc = tl.full((BLOCK_N, 16, BLOCK_D), 0., tl.float32)
    for k in tl.range(0, 4):
        wy, wx, valid, roff = _corner(k, y0, x0, dn, dw, ds, de, inside, H, W, C3, offs_d)
        wk = wy * wx
        vrow = tl.load(v_base + roff, mask=valid[:, :, None] & dmask[None, None, :], other=0.).to(tl.float32)
        acc += (p * wk)[:, :, None] * vrow
    out = tl.reduce(acc, 1, tl.standard._sum_combine)
    out_ptrs = out_ptr + (b * N + offs_n)[:, None] * C + j * D + offs_d[None, :]
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=nmask[:, None] & dmask[None, :])


def _sampled_attention_bwd_kernel(
        gout_ptr, qkv_ptr, walk_ptr, attn_ptr, gqkv_ptr, gwalk_ptr, gpos_ptr,
        N, H, W, C, NH, D, Hf, Wf, scale,
        NEED_WALK: tl.constexpr, NEED_POS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    b, j, offs_n, nmask, offs_d, dmask, taps, nt_mask = _program_tile(N, NH, D, BLOCK_N, BLOCK_D)
    C3 = 3 * C
    nd_mask = nmask[:, None] & dmask[None, :]
    qkv_b = qkv_ptr + b * N * C3
    gqkv_b = gqkv_ptr + b * N * C3
    q_off = offs_n.to(tl.int64)[:, None] * C3 + j * D + offs_d[None, :]
    q = tl.load(qkv_b + q_off, mask=nd_mask, other=0.).to(tl.float32)
    go = tl.load(gout_ptr + (b * N + offs_n)[:, None] * C + j * D + offs_d[None, :], mask=nd_mask,
                 other=0.).to(tl.float32)
    attn_off = (((b * NH + j) * N + offs_n) * 9)[:, None] + taps[None, :]
    p = tl.load(attn_ptr + attn_off, mask=nt_mask, other=0.).to(tl.float32)
    # ---- the forward's sampling geometry, recomputed
    walk_off, inside, y0, x0, dn, dw, ds, de, hv, wv = _tap_geometry(
        walk_ptr, b, j, offs_n, taps, nt_mask, N, W, NH, Hf, Wf, BLOCK_N)
    k_base = qkv_b + C + j * D
    v_base = qkv_b + 2 * C + j * D
    gk_base = gqkv_b + C + j * D
    gv_base = gqkv_b + 2 * C + j * D
    # ---- pass 1: dL/da_t = <g_out, v_t>, the value gradient a_t w_k g_out scattered into the sampled rows
    # and, for the walks, sum_k dw_k/d(ix, iy) <q, k_k> and likewise <g_out, v_k>
    ga = tl.full((BLOCK_N, 16), 0., tl.float32)
    qx = tl.full((BLOCK_N, 16), 0., tl.float32)
    qy = tl.full((BLOCK_N, 16), 0., tl.float32)
    vx = tl.full((BLOCK_N, 16), 0., tl.float32)
    vy = tl.full((BLOCK_N, 16), 0., tl.float32)
    for k in tl.range(0, 4):
        wy, wx, valid, roff = _corner(k, y0, x0, dn, dw, ds, de, inside, H, W, C3, offs_d)
        wk = wy * wx
        cmask = valid[:, :, None] & dmask[None, None, :]
        vrow = tl.load(v_base + roff, mask=cmask, other=0.).to(tl.float32)
        gvd = tl.reduce(go[:, None, :] * vrow, 2, tl.standard._sum_combine)
        ga += wk * gvd
        # values: out = sum_t a_t sum_k w_k v_k
        tl.atomic_add(gv_base + roff, (p * wk)[:, :, None] * go[:, None, :], mask=cmask, sem='relaxed')
        if NEED_WALK:
            # w_k = wy * wx with wx = 1 - dw (west corners) or dw (east), wy = 1 - dn (north) or dn (south)
            krow = tl.load(k_base + roff, mask=cmask, other=0.).to(tl.float32)
            qk = tl.reduce(q[:, None, :] * krow, 2, tl.standard._sum_combine)
            sgn_x = tl.where(k % 2 == 0, -1., 1.)  # d(wx)/d(ix): -1 west, +1 east
            sgn_y = tl.where(k // 2 == 0, -1., 1.)  # d(wy)/d(iy): -1 north, +1 south
            qx += sgn_x * (wy * qk)
            vx += sgn_x * (wy * gvd)
            qy += sgn_y * (wx * qk)
            vy += sgn_y * (wx * gvd)
    # ---- softmax backward: dL/dl_t = a_t (dL/da_t - sum_s a_s dL/da_s)
    s = tl.reduce(p * ga, 1, tl.standard._sum_combine)
    gl = p * (ga - s[:, None])
    if NEED_POS:
        tl.store(gpos_ptr + attn_off, gl, mask=nt_mask)
    gls = gl * scale
    # ---- pass 2: query gradient sum_t gls_t sum_k w_k k_k (the queries are this program's: plain store),
    # key gradient gls_t w_k q scattered into the sampled rows
    gq = tl.full((BLOCK_N, BLOCK_D), 0., tl.float32)
    for k in tl.range(0, 4):
        wy, wx, valid, roff = _corner(k, y0, x0, dn, dw, ds, de, inside, H, W, C3, offs_d)
        wk = wy * wx
        cmask = valid[:, :, None] & dmask[None, None, :]
        krow = tl.load(k_base + roff, mask=cmask, other=0.).to(tl.float32)
        gq += tl.reduce((gls * wk)[:, :, None] * krow, 1, tl.standard._sum_combine)
        tl.atomic_add(gk_base + roff, (gls * wk)[:, :, None] * q[:, None, :], mask=cmask, sem='relaxed')
    tl.store(gqkv_b + q_off, gq, mask=nd_mask)
    if NEED_WALK:
        # d(w_k)/d(ix, iy) sums, then the chain through the normalisation as autograd does in the reference:
        # i = (g + 1) (size / 2) - 0.5 ; g = (2 p + 1) / size - 1 ; p = base + walk
        gix = gls * qx + p * vx
        giy = gls * qy + p * vy
        gwy = tl.where(inside, tl.math.div_rn(giy * (Hf * 0.5), hv) * 2., 0.)
        gwx = tl.where(inside, tl.math.div_rn(gix * (Wf * 0.5), wv) * 2., 0.)
        tl.store(gwalk_ptr + walk_off, gwy, mask=nt_mask)
        tl.store(gwalk_ptr + walk_off + 1, gwx, mask=nt_mask)


_KERNEL_SOURCES = {'fwd': _sampled_attention_fwd_kernel, 'bwd': _sampled_attention_bwd_kernel}
_KERNELS: Dict[Tuple[str, bool], object] = {}


def _use_interpreter(t: Tensor) -> bool:
    """CPU tensors always run under Triton's interpreter; ``TRITON_INTERPRET=1`` forces it for any device."""
    return t.device.type == 'cpu' or os.environ.get('TRITON_INTERPRET', '0') == '1'


def _kernel(name: str, interpret: bool):
    key = (name, interpret)
    if key not in _KERNELS:
        fn = _KERNEL_SOURCES[name]
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction
            _KERNELS[key] = InterpretedFunction(fn)
        else:
            from triton.runtime.jit import JITFunction
            _KERNELS[key] = JITFunction(fn)
    return _KERNELS[key]


def _launch_config(N: int, d: int, interpret: bool, backward: bool) -> Tuple[int, int, int]:
    """(BLOCK_N, BLOCK_D, num_warps). A program's main tiles are (BLOCK_N, 16, BLOCK_D). On a GPU they hold
    4096 fp32 numbers in the forward and 2048 in the backward (BLOCK_N = 4 / 2 queries for d = 64, 4 warps):
    compiled offline for sm_80 with ``triton.compile`` (Triton 3.8) these need 143 / 219 registers per
    thread and spill nothing; twice the backward tile spills. Under the interpreter every operation costs a
    fixed Python overhead, so fewer, larger programs are faster."""
    block_d = triton.next_power_of_2(max(1, d))
    if interpret:
        return min(64, triton.next_power_of_2(max(1, N))), block_d, 4
    budget = 2048 if backward else 4096
    return max(1, min(16, budget // (16 * block_d))), block_d, 4


def _check(qkv: Tensor, walk: Tensor, H: int, W: int, num_heads: int) -> Tuple[int, int, int, int]:
    if not isinstance(qkv, Tensor) or not isinstance(walk, Tensor):
        raise TypeError('qkv and walk must be tensors')
    for name, v in (('H', H), ('W', W)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f'{name} must be a positive int, got {v!r}')
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f'num_heads must be a positive int, got {num_heads!r}')
    if qkv.dim() != 3 or qkv.size(2) % (3 * num_heads) != 0:
        raise ValueError(f'qkv must be (B, N, 3C) with C divisible by num_heads={num_heads}, '
                         f'got {tuple(qkv.shape)}')
    B, N, C3 = qkv.shape
    if N != H * W:
        raise ValueError(f'qkv has N = {N} tokens, expected H * W = {H} * {W} = {H * W}')
    if tuple(walk.shape) != (B, N, num_heads, 2 * NUM_TAPS):
        raise ValueError(f'walk must be (B, N, h, 18) = {(B, N, num_heads, 2 * NUM_TAPS)}, '
                         f'got {tuple(walk.shape)}')
    for name, t in (('qkv', qkv), ('walk', walk)):
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f'{name} must be float32, float16 or bfloat16, got {t.dtype}')
        if t.device != qkv.device:
            raise ValueError(f'{name} is on {t.device}, qkv on {qkv.device}')
    C = C3 // 3
    return B, N, C, C // num_heads


def sampled_attention_fwd(qkv: Tensor, walk: Tensor, pos: Tensor, H: int, W: int, num_heads: int,
                          scale: float) -> Tuple[Tensor, Tensor]:
    """Forward of the DGMN2 sampled attention.

    Args:
        qkv (Tensor): (B, N, 3C), N = H * W, channels [q | k | v], each h chunks of d. float32, float16 or
            bfloat16.
        walk (Tensor): (B, N, h, 18) walks as (dy, dx) pairs per tap, in pixels. float32/16, bfloat16.
        pos (Tensor): (B, h, N, 9) relative-position logits. float32/16, bfloat16.
        H (int), W (int): the map size.
        num_heads (int): h.
        scale (float): multiplies <q, k> (``d ** -0.5`` in DGMN2).

    Returns:
        tuple[Tensor, Tensor]: ``out`` (B, N, C) in qkv's dtype (accumulated in fp32) and ``attn``
        (B, h, N, 9) the softmax weights in float32 (saved for the backward).
    """
    B, N, C, d = _check(qkv, walk, H, W, num_heads)
    if not isinstance(pos, Tensor) or tuple(pos.shape) != (B, num_heads, N, NUM_TAPS):
        raise ValueError(f'pos must be a (B, h, N, 9) = {(B, num_heads, N, NUM_TAPS)} tensor, got '
                         f'{tuple(pos.shape) if isinstance(pos, Tensor) else type(pos).__name__}')
    if pos.dtype not in _FLOAT_DTYPES:
        raise TypeError(f'pos must be float32, float16 or bfloat16, got {pos.dtype}')
    qkv, walk, pos = qkv.contiguous(), walk.contiguous(), pos.contiguous()
    out = torch.empty(B, N, C, device=qkv.device, dtype=qkv.dtype)
    attn = torch.empty(B, num_heads, N, NUM_TAPS, device=qkv.device, dtype=torch.float32)
    if out.numel() == 0:
        return out, attn
    interpret = _use_interpreter(qkv)
    block_n, block_d, num_warps = _launch_config(N, d, interpret, False)
    grid = (triton.cdiv(N, block_n), B * num_heads)
    _kernel('fwd', interpret)[grid](
        qkv, walk, pos, out, attn, N, H, W, C, num_heads, d, float(H), float(W), float(scale),
        BLOCK_N=block_n, BLOCK_D=block_d, num_warps=num_warps, enable_fp_fusion=False)
    return out, attn


def sampled_attention_bwd(grad_out: Tensor, qkv: Tensor, walk: Tensor, attn: Tensor, H: int, W: int,
                          num_heads: int, scale: float, need_walk_grad: bool = True,
                          need_pos_grad: bool = True) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Backward of :func:`sampled_attention_fwd` (recomputes the sampling; no N x 9 x d buffer).

    Args:
        grad_out (Tensor): (B, N, C) gradient of ``out`` (any of the three float dtypes).
        qkv, walk: as in the forward.
        attn (Tensor): (B, h, N, 9) softmax weights returned by the forward.
        H, W, num_heads, scale: as in the forward.
        need_walk_grad (bool): compute the walk gradient. Defaults to True.
        need_pos_grad (bool): compute the pos gradient. Defaults to True.

    Returns:
        tuple: ``gqkv`` (B, N, 3C) in qkv's dtype (accumulated in an fp32 buffer), ``gwalk``
        (B, N, h, 18) in walk's dtype or None, ``gpos`` (B, h, N, 9) in float32 or None.
        The k and v parts of ``gqkv`` are summed with atomics: not bitwise reproducible on a GPU.
    """
    B, N, C, d = _check(qkv, walk, H, W, num_heads)
    if tuple(grad_out.shape) != (B, N, C):
        raise ValueError(f'grad_out must be (B, N, C) = {(B, N, C)}, got {tuple(grad_out.shape)}')
    if tuple(attn.shape) != (B, num_heads, N, NUM_TAPS):
        raise ValueError(f'attn must be (B, h, N, 9) = {(B, num_heads, N, NUM_TAPS)}, got {tuple(attn.shape)}')
    for name, t in (('grad_out', grad_out), ('attn', attn)):
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f'{name} must be float32, float16 or bfloat16, got {t.dtype}')
    grad_out, qkv, walk, attn = grad_out.contiguous(), qkv.contiguous(), walk.contiguous(), attn.contiguous()
    dev = qkv.device
    gqkv = torch.zeros(B, N, 3 * C, device=dev, dtype=torch.float32)
    gwalk = torch.empty(walk.shape, device=dev, dtype=torch.float32) if need_walk_grad else None
    gpos = torch.empty(B, num_heads, N, NUM_TAPS, device=dev, dtype=torch.float32) if need_pos_grad else None
    if gqkv.numel() > 0:
        interpret = _use_interpreter(qkv)
        block_n, block_d, num_warps = _launch_config(N, d, interpret, True)
        grid = (triton.cdiv(N, block_n), B * num_heads)
        _kernel('bwd', interpret)[grid](
            grad_out, qkv, walk, attn, gqkv, gwalk if gwalk is not None else gqkv,
            gpos if gpos is not None else gqkv, N, H, W, C, num_heads, d, float(H), float(W), float(scale),
            NEED_WALK=bool(need_walk_grad), NEED_POS=bool(need_pos_grad), BLOCK_N=block_n, BLOCK_D=block_d,
            num_warps=num_warps, enable_fp_fusion=False)
    if gqkv.dtype != qkv.dtype:
        gqkv = gqkv.to(qkv.dtype)
    if gwalk is not None and gwalk.dtype != walk.dtype:
        gwalk = gwalk.to(walk.dtype)
    return gqkv, gwalk, gpos

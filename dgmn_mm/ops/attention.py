"""The DGMN2 sampled attention and its relative-position rows as PyTorch operators.

"Dynamic Graph Message Passing Networks for Visual Recognition" (TPAMI 2022), Eqs. 8-9: per query n at
(y, x) and head, the keys and values of K = 9 nodes are sampled bilinearly at the 3 x 3 neighbourhood moved
by the predicted walks (zeros outside the map), and ``out_n = sum_t softmax_t(scale q_n . k_t + pos_t) v_t``.

Operators (``torch.library.custom_op``, namespace ``dgmn_mm``), each with a fake (meta) implementation, so
``torch.compile(fullgraph=True)`` and ``torch.export`` capture them, and a FLOP handle for mmengine's
analyzer (:mod:`dgmn_mm.ops.flops`):

* ``dgmn_mm::sampled_attention(qkv, walk, pos, H, W, num_heads, scale) -> (out, attn)``:
  qkv (B, N, 3C) as the ``qkv`` Linear writes it (channels ``[q | k | v]``, each h chunks of d), walk
  (B, N, h, 2K) as (dy, dx) pairs in pixels, pos (B, h, N, K) -> out (B, N, C), attn (B, h, N, K) the
  softmax weights (saved for the backward; not differentiable). Differentiable in qkv, walk and pos
  through the operator ``dgmn_mm::sampled_attention_backward`` (hand-written in the C++ and Triton
  kernels; autograd through the PyTorch implementation otherwise).
* ``dgmn_mm::relpos_rows(qkv, rows, H, W, num_heads, by_column) -> (B, h, N, K)``:
  ``r[b, j, n, t] = q[b, j, n] . rows[x(n) if by_column else y(n), t]`` on the q part of qkv.

Implementations (chosen per call by :mod:`dgmn_mm.ops.backend`): C++/OpenMP on CPU
(``dgmn_mm/ops/csrc/sampled_attention.cpp``), Triton on CUDA (``dgmn_mm.ops.triton``), and pure PyTorch on
any device (:func:`sampled_attention_torch`), which is also what ONNX export records (see
``dgmn_mm.models.layers.sampled_attention``). All compute the sampling locations with the same
floating-point steps as ``F.grid_sample`` on :func:`~dgmn_mm.ops.geometry.walk_to_grid`.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import backend as _backend
from .geometry import NUM_SAMPLES, combine_relpos, relpos_rows_pair, walk_to_grid


# --------------------------------------------------------------------------------------------------------
# Pure-PyTorch implementation (any device; the export decomposition)
# --------------------------------------------------------------------------------------------------------
def sampled_attention_torch(qkv: Tensor, walk: Tensor, pos: Tensor, hw_shape: Tuple[int, int], num_heads: int,
                            scale: float, attn_drop: Optional[torch.nn.Module] = None,
                            chunk_size: Optional[int] = 2048, return_attn: bool = False):
    """Sampled attention in PyTorch ops (autograd, any device). Same contract as the operator.

    One ``grid_sample`` per chunk of queries on the (B h, 2d, H, W) k|v map with a (B h, K, n, 2) grid, so
    the samples come out as (B h, 2d, K, n) with the query index innermost; the logits and the weighted sum
    are broadcast-multiply + reduce over d and K on cache-sized chunks. ``chunk_size=None``: one chunk (a
    graph without shape-dependent loops, for export).

    Returns:
        Tensor: out (B, N, C); with ``return_attn`` also the softmax weights (B, h, N, K) (before dropout).
    """
    B, N, C3 = qkv.shape
    C = C3 // 3
    H, W = hw_shape
    nh, K = num_heads, NUM_SAMPLES
    d = C // nh
    BH = B * nh
    parts = qkv.view(B, N, 3, nh, d)
    q = parts[:, :, 0].permute(0, 2, 3, 1).reshape(BH, d, N)  # (Bh, d, N)
    kv = parts[:, :, 1:].permute(0, 3, 2, 4, 1).reshape(BH, 2 * d, H, W)  # (Bh, [k|v] d, H, W)
    w = walk.view(B, H, W, nh, K, 2).permute(0, 3, 1, 2, 4, 5).reshape(BH, H, W, K, 2)
    grid = walk_to_grid(w).view(BH, N, K, 2).transpose(1, 2)  # (Bh, K, N, 2), same values as the reference
    pos = pos.reshape(BH, N, K).transpose(1, 2)  # (Bh, K, N)
    bounds = [(0, N)] if chunk_size is None else [(n0, min(N, n0 + chunk_size)) for n0 in range(0, N, chunk_size)]
    outs, attns = [], []
    for n0, n1 in bounds:
        g = grid if chunk_size is None else grid[:, :, n0:n1]
        p = pos if chunk_size is None else pos[:, :, n0:n1]
        qc = q[:, :, None] if chunk_size is None else q[:, :, None, n0:n1]
        s = F.grid_sample(kv, g, mode='bilinear', padding_mode='zeros', align_corners=False)
        logits = (qc * s[:, :d]).sum(1) * scale + p  # (Bh, K, n)
        attn = logits.softmax(dim=1)
        if return_attn:
            attns.append(attn)
        if attn_drop is not None:
            attn = attn_drop(attn)
        outs.append((s[:, d:] * attn[:, None]).sum(2))  # (Bh, d, n)
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    out = out.view(B, nh, d, N).permute(0, 3, 1, 2).reshape(B, N, C)
    if not return_attn:
        return out
    attn = torch.cat(attns, dim=2) if len(attns) > 1 else attns[0]
    return out, attn.view(B, nh, K, N).transpose(2, 3).contiguous()


def relpos_rows_torch(qkv: Tensor, rows: Tensor, H: int, W: int, num_heads: int, by_column: bool) -> Tensor:
    """``dgmn_mm::relpos_rows`` in PyTorch: (B, N, 3C), (W or H, K, d) -> (B, h, N, K)."""
    B, N, C3 = qkv.shape
    d = C3 // 3 // num_heads
    q = qkv[..., :C3 // 3].reshape(B, H, W, num_heads, d)
    eq = 'byxjd,xtd->bjyxt' if by_column else 'byxjd,ytd->bjyxt'
    return torch.einsum(eq, q, rows).reshape(B, num_heads, N, rows.shape[1]).contiguous()


# --------------------------------------------------------------------------------------------------------
# dgmn_mm::sampled_attention
# --------------------------------------------------------------------------------------------------------
def _fwd_torch(qkv, walk, pos, H, W, num_heads, scale):
    with torch.no_grad():
        out, attn = sampled_attention_torch(qkv, walk, pos, (H, W), num_heads, scale, return_attn=True)
    return out.contiguous(), attn  # operator outputs are contiguous, as the fake kernel says


def _fwd_cpp(qkv, walk, pos, H, W, num_heads, scale):
    out, attn = _backend.load_extension().forward(qkv.contiguous(), walk.contiguous(), pos.contiguous(), H, W,
                                                  num_heads, scale)
    return out, attn


def _fwd_triton(qkv, walk, pos, H, W, num_heads, scale):
    mod = _backend._load('triton')
    out, attn = mod.sampled_attention_fwd(qkv.contiguous(), walk.contiguous(), pos.contiguous(), H, W,
                                          num_heads, scale)
    return out, attn


_FWD = dict(cpp=_fwd_cpp, triton=_fwd_triton, torch=_fwd_torch)


def _check(qkv: Tensor, walk: Tensor, pos: Tensor, H: int, W: int, num_heads: int):
    if qkv.dim() != 3 or qkv.shape[2] % (3 * num_heads):
        raise ValueError(f'qkv must be (B, N, 3C) with C divisible by num_heads={num_heads}, '
                         f'got {tuple(qkv.shape)}')
    B, N = qkv.shape[:2]
    if N != H * W:
        raise ValueError(f'qkv has N={N} tokens, H * W = {H} * {W} needs {H * W}')
    if tuple(walk.shape) != (B, N, num_heads, 2 * NUM_SAMPLES):
        raise ValueError(f'walk must be {(B, N, num_heads, 2 * NUM_SAMPLES)}, got {tuple(walk.shape)}')
    if tuple(pos.shape) != (B, num_heads, N, NUM_SAMPLES):
        raise ValueError(f'pos must be {(B, num_heads, N, NUM_SAMPLES)}, got {tuple(pos.shape)}')
    if not (qkv.dtype == walk.dtype == pos.dtype):
        raise TypeError(f'qkv, walk and pos must share a dtype, got {qkv.dtype}, {walk.dtype}, {pos.dtype}')


@torch.library.custom_op('dgmn_mm::sampled_attention', mutates_args=())
def _sampled_attention_op(qkv: Tensor, walk: Tensor, pos: Tensor, H: int, W: int, num_heads: int,
                          scale: float) -> Tuple[Tensor, Tensor]:
    # devices without a registered kernel: PyTorch
    return _fwd_torch(qkv, walk, pos, H, W, num_heads, scale)


@_sampled_attention_op.register_kernel('cpu')
def _sampled_attention_cpu(qkv, walk, pos, H, W, num_heads, scale):
    return _FWD[_backend.resolve('cpu')](qkv, walk, pos, H, W, num_heads, scale)


@_sampled_attention_op.register_kernel('cuda')
def _sampled_attention_cuda(qkv, walk, pos, H, W, num_heads, scale):
    name = _backend.resolve('cuda')
    if name == 'cpp':
        raise _backend.BackendUnavailableError("the 'cpp' backend runs on CPU tensors only")
    return _FWD[name](qkv, walk, pos, H, W, num_heads, scale)


@_sampled_attention_op.register_fake
def _sampled_attention_fake(qkv, walk, pos, H, W, num_heads, scale):
    B, N, C3 = qkv.shape
    return qkv.new_empty(B, N, C3 // 3), qkv.new_empty(B, num_heads, N, NUM_SAMPLES)


# --------------------------------------------------------------------------------------------------------
# dgmn_mm::sampled_attention_backward
# --------------------------------------------------------------------------------------------------------
def _bwd_torch(grad_out, qkv, walk, pos, attn, H, W, num_heads, scale, need_walk_grad, need_pos_grad):
    """Hand-written backward in PyTorch ops (operator kernels run below autograd, so no autograd here):
    the samples are recomputed with ``grid_sample``, the softmax / dot-product chain rule is applied
    explicitly, and ``grid_sampler_2d_backward`` scatters into the key / value maps and the grid."""
    B, N, C3 = qkv.shape
    C = C3 // 3
    nh, K = num_heads, NUM_SAMPLES
    d = C // nh
    BH = B * nh
    parts = qkv.view(B, N, 3, nh, d)
    q = parts[:, :, 0].permute(0, 2, 3, 1).reshape(BH, d, N)
    kv = parts[:, :, 1:].permute(0, 3, 2, 4, 1).reshape(BH, 2 * d, H, W)
    w = walk.view(B, H, W, nh, K, 2).permute(0, 3, 1, 2, 4, 5).reshape(BH, H, W, K, 2)
    grid = walk_to_grid(w).view(BH, N, K, 2).transpose(1, 2)  # (Bh, K, N, 2)
    s = F.grid_sample(kv, grid, mode='bilinear', padding_mode='zeros', align_corners=False)  # (Bh, 2d, K, N)
    a = attn.reshape(BH, N, K).transpose(1, 2)  # (Bh, K, N)
    g = grad_out.reshape(B, N, nh, d).permute(0, 2, 3, 1).reshape(BH, d, N)
    g_a = (g[:, :, None] * s[:, d:]).sum(1)  # (Bh, K, N)
    g_l = a * (g_a - (a * g_a).sum(1, keepdim=True))  # softmax backward
    g_q = (g_l[:, None] * s[:, :d]).sum(2) * scale  # (Bh, d, N)
    g_s = torch.cat((q[:, :, None] * g_l[:, None] * scale, g[:, :, None] * a[:, None]), dim=1)  # (Bh, 2d, K, N)
    g_kv, g_grid = torch.ops.aten.grid_sampler_2d_backward(g_s, kv, grid, 0, 0, False, [True, need_walk_grad])
    gqkv = torch.cat((g_q.view(B, nh, 1, d, N), g_kv.view(B, nh, 2, d, N)), dim=2)  # (B, h, 3, d, N)
    gqkv = gqkv.permute(0, 4, 2, 1, 3).reshape(B, N, C3).contiguous()
    gwalk = gpos = None
    if need_walk_grad:
        g_grid = g_grid.transpose(1, 2)  # (Bh, N, K, 2) as (gx, gy); grid = (2 (base + walk) + 1) / size - 1
        gw = torch.stack((g_grid[..., 1] * (2. / H), g_grid[..., 0] * (2. / W)), dim=-1)  # (dy, dx)
        gwalk = gw.view(B, nh, H, W, K, 2).permute(0, 2, 3, 1, 4, 5).reshape(B, N, nh, 2 * K).contiguous()
    if need_pos_grad:
        gpos = g_l.view(B, nh, K, N).transpose(2, 3).contiguous()
    return gqkv, gwalk, gpos


def _bwd_cpp(grad_out, qkv, walk, pos, attn, H, W, num_heads, scale, need_walk_grad, need_pos_grad):
    # rows a query can write to in the backward scatter: |dy| + 3 (3 x 3 taps, bilinear corners, slack)
    dy = walk.view(*walk.shape[:-1], NUM_SAMPLES, 2)[..., 0]
    max_dy = float(dy.abs().max()) if dy.numel() else 0.
    reach = int(max_dy) + 3 if max_dy == max_dy and max_dy < H else -1  # -1: unbounded (or NaN)
    gqkv, gwalk, gpos = _backend.load_extension().backward(
        grad_out.contiguous(), qkv.contiguous(), walk.contiguous(), attn.contiguous(), H, W, num_heads, scale,
        reach, need_walk_grad, need_pos_grad)
    return gqkv, gwalk, gpos


def _bwd_triton(grad_out, qkv, walk, pos, attn, H, W, num_heads, scale, need_walk_grad, need_pos_grad):
    mod = _backend._load('triton')
    return mod.sampled_attention_bwd(grad_out.contiguous(), qkv.contiguous(), walk.contiguous(),
                                     attn.contiguous(), H, W, num_heads, scale, need_walk_grad, need_pos_grad)


_BWD = dict(cpp=_bwd_cpp, triton=_bwd_triton, torch=_bwd_torch)


def _bwd_outputs(res, qkv, walk, pos, need_walk_grad, need_pos_grad):
    """Operators return tensors: an input gradient that is not needed is an empty tensor."""
    gqkv, gwalk, gpos = res
    empty = qkv.new_empty(0)
    gwalk = gwalk if (need_walk_grad and gwalk is not None) else empty
    gpos = gpos if (need_pos_grad and gpos is not None) else empty.clone()
    return gqkv, gwalk, gpos


@torch.library.custom_op('dgmn_mm::sampled_attention_backward', mutates_args=())
def _sampled_attention_backward_op(grad_out: Tensor, qkv: Tensor, walk: Tensor, pos: Tensor, attn: Tensor, H: int,
                                   W: int, num_heads: int, scale: float, need_walk_grad: bool,
                                   need_pos_grad: bool) -> Tuple[Tensor, Tensor, Tensor]:
    res = _bwd_torch(grad_out, qkv, walk, pos, attn, H, W, num_heads, scale, need_walk_grad, need_pos_grad)
    return _bwd_outputs(res, qkv, walk, pos, need_walk_grad, need_pos_grad)


@_sampled_attention_backward_op.register_kernel('cpu')
def _sampled_attention_backward_cpu(grad_out, qkv, walk, pos, attn, H, W, num_heads, scale, need_walk_grad,
                                    need_pos_grad):
    fn = _BWD[_backend.resolve('cpu')]
    res = fn(grad_out, qkv, walk, pos, attn, H, W, num_heads, scale, need_walk_grad, need_pos_grad)
    return _bwd_outputs(res, qkv, walk, pos, need_walk_grad, need_pos_grad)


@_sampled_attention_backward_op.register_kernel('cuda')
def _sampled_attention_backward_cuda(grad_out, qkv, walk, pos, attn, H, W, num_heads, scale, need_walk_grad,
                                     need_pos_grad):
    name = _backend.resolve('cuda')
    if name == 'cpp':
        raise _backend.BackendUnavailableError("the 'cpp' backend runs on CPU tensors only")
    res = _BWD[name](grad_out, qkv, walk, pos, attn, H, W, num_heads, scale, need_walk_grad, need_pos_grad)
    return _bwd_outputs(res, qkv, walk, pos, need_walk_grad, need_pos_grad)


@_sampled_attention_backward_op.register_fake
def _sampled_attention_backward_fake(grad_out, qkv, walk, pos, attn, H, W, num_heads, scale, need_walk_grad,
                                     need_pos_grad):
    return (torch.empty_like(qkv), torch.empty_like(walk) if need_walk_grad else qkv.new_empty(0),
            torch.empty_like(pos) if need_pos_grad else qkv.new_empty(0))


def _sa_setup_context(ctx, inputs, output):
    qkv, walk, pos, H, W, num_heads, scale = inputs
    ctx.save_for_backward(qkv, walk, pos, output[1])
    ctx.params = (H, W, num_heads, scale)
    ctx.mark_non_differentiable(output[1])


def _sa_backward(ctx, grad_out, grad_attn):
    qkv, walk, pos, attn = ctx.saved_tensors
    H, W, num_heads, scale = ctx.params
    need_walk, need_pos = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    if grad_out is None:
        return None, None, None, None, None, None, None
    gqkv, gwalk, gpos = torch.ops.dgmn_mm.sampled_attention_backward(
        grad_out.contiguous(), qkv, walk, pos, attn, H, W, num_heads, scale, need_walk, need_pos)
    return gqkv, (gwalk if need_walk else None), (gpos if need_pos else None), None, None, None, None


_sampled_attention_op.register_autograd(_sa_backward, setup_context=_sa_setup_context)


# --------------------------------------------------------------------------------------------------------
# dgmn_mm::relpos_rows
# --------------------------------------------------------------------------------------------------------
@torch.library.custom_op('dgmn_mm::relpos_rows', mutates_args=())
def _relpos_rows_op(qkv: Tensor, rows: Tensor, H: int, W: int, num_heads: int, by_column: bool) -> Tensor:
    return relpos_rows_torch(qkv, rows, H, W, num_heads, by_column)


@_relpos_rows_op.register_kernel('cpu')
def _relpos_rows_cpu(qkv, rows, H, W, num_heads, by_column):
    if _backend.resolve('cpu') == 'cpp' and qkv.dtype in (torch.float32, torch.float64):
        return _backend.load_extension().relpos_rows(qkv.contiguous(), rows.to(qkv.dtype).contiguous(), H, W,
                                                     num_heads, by_column)
    return relpos_rows_torch(qkv, rows.to(qkv.dtype), H, W, num_heads, by_column)


@_relpos_rows_op.register_fake
def _relpos_rows_fake(qkv, rows, H, W, num_heads, by_column):
    B, N, _ = qkv.shape
    return qkv.new_empty(B, num_heads, N, rows.shape[1])


def _rr_setup_context(ctx, inputs, output):
    qkv, rows, H, W, num_heads, by_column = inputs
    ctx.save_for_backward(qkv, rows)
    ctx.params = (H, W, num_heads, by_column)


def _rr_backward(ctx, grad):
    qkv, rows = ctx.saved_tensors
    H, W, nh, by_column = ctx.params
    B, N, C3 = qkv.shape
    d = C3 // 3 // nh
    K = rows.shape[1]
    g = grad.reshape(B, nh, H, W, K)
    q = qkv[..., :C3 // 3].reshape(B, H, W, nh, d)
    eq_q, eq_r = ('bjyxt,xtd->byxjd', 'bjyxt,byxjd->xtd') if by_column else \
        ('bjyxt,ytd->byxjd', 'bjyxt,byxjd->ytd')
    gqkv = grows = None
    if ctx.needs_input_grad[0]:
        gq = torch.einsum(eq_q, g, rows.to(g.dtype)).reshape(B, N, C3 // 3)
        gqkv = F.pad(gq, (0, 2 * C3 // 3))
    if ctx.needs_input_grad[1]:
        grows = torch.einsum(eq_r, g, q).to(rows.dtype)
    return gqkv, grows, None, None, None, None


_relpos_rows_op.register_autograd(_rr_backward, setup_context=_rr_setup_context)


# --------------------------------------------------------------------------------------------------------
# Python entry points
# --------------------------------------------------------------------------------------------------------
def sampled_attention(qkv: Tensor, walk: Tensor, pos: Tensor, hw_shape: Sequence[int], num_heads: int,
                      scale: float) -> Tensor:
    """out (B, N, C) of ``dgmn_mm::sampled_attention``; see the module doc for the shapes.

    Raises:
        ValueError / TypeError: inconsistent shapes or dtypes.
    """
    H, W = hw_shape
    _check(qkv, walk, pos, H, W, num_heads)
    out, _ = torch.ops.dgmn_mm.sampled_attention(qkv, walk, pos, H, W, num_heads, float(scale))
    return out


def relpos(qkv: Tensor, rel_width: Tensor, rel_height: Tensor, hw_shape: Sequence[int], num_heads: int,
           mode: str = 'official') -> Tensor:
    """The RelPos term (B, h, N, K) of the q part of qkv (B, N, 3C) with the (L, d) tables, computed by two
    ``dgmn_mm::relpos_rows`` calls (the K used rows only) and combined as in the official code."""
    H, W = hw_shape
    B, N, _ = qkv.shape
    rows_w, rows_h = relpos_rows_pair(rel_width, rel_height, H, W)
    rows_w, rows_h = rows_w.to(qkv.dtype).contiguous(), rows_h.to(qkv.dtype).contiguous()
    r_w = torch.ops.dgmn_mm.relpos_rows(qkv, rows_w, H, W, num_heads, True).view(B, num_heads, H, W, NUM_SAMPLES)
    r_h = torch.ops.dgmn_mm.relpos_rows(qkv, rows_h, H, W, num_heads, False).view(B, num_heads, H, W, NUM_SAMPLES)
    return combine_relpos(r_w, r_h, mode).reshape(B, num_heads, N, NUM_SAMPLES)


# --------------------------------------------------------------------------------------------------------
# Analytical FLOPs (2 x multiply-accumulates; softmax, norms and activations not counted)
# --------------------------------------------------------------------------------------------------------
def dgmn2_attention_flops(num_tokens: int, embed_dims: int, num_heads: int, height: Optional[int] = None,
                          width: Optional[int] = None, num_samples: int = NUM_SAMPLES) -> int:
    """FLOPs of one DGMN2 attention layer on N tokens:

    ``2 N C (3C)`` qkv + ``2 N h d 2K`` walks + ``2 N h K 2d`` RelPos (two terms, only the K rows used)
    + ``2 N h K 4 (2d)`` bilinear sampling of k and v (4 corners) + ``2 N h K d`` logits
    + ``2 N h K d`` weighted sum + ``2 N C C`` proj.
    """
    N, C, h, K = num_tokens, embed_dims, num_heads, num_samples
    d = C // h
    return 2 * N * C * 3 * C + 2 * N * h * d * 2 * K + dgmn2_core_flops(N, h, d, K) + 2 * N * C * C


def dgmn2_core_flops(num_tokens: int, num_heads: int, head_dims: int, num_samples: int = NUM_SAMPLES) -> int:
    """The sampled-attention core alone: ``2 N h K (2d + 8d + d + d)`` = RelPos (two terms, K rows) +
    bilinear sampling of k and v (4 corners, 2d channels) + logits + weighted sum."""
    N, h, d, K = num_tokens, num_heads, head_dims, num_samples
    return 2 * N * h * K * (2 * d + 8 * d + d + d)

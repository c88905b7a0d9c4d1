"""Fast path of the DGMN2 attention (``DGMN2Attention(attn_impl='fast')``).

Same maths as the reference path (spec sec. 4-5): per query and head, 9 nodes sampled bilinearly along
the predicted walks, ``softmax(q.k / sqrt(d) + r)`` over them, weighted sum of the sampled values. The
reference samples keys and values separately into two (B, h, N, d, 9) tensors and contracts them with
einsums (several more copies of that size). The fast path never materialises N x 9 x d:

* backend ``'cpp'`` (CPU, the default when the extension is built, see ``dgmn_mm/csrc``): one fused
  C++/OpenMP kernel reads q, k and v straight from the (B, N, 3C) output of ``qkv`` (channels-last, so a
  bilinear corner is d contiguous numbers), computes the 9 logits, the softmax and the weighted sum per
  query and writes (B, N, C) in the layout ``proj`` consumes. Its backward recomputes the sampling from
  the saved qkv, walks and softmax weights (B, h, N, 9) and is written by hand (custom autograd
  function), so training memory is O(N (3C + 27 h)) per layer instead of O(N C 9).
* backend ``'torch'`` (any device; used when the extension is missing, on CUDA, or with attention
  dropout in training): one ``grid_sample`` on the concatenated k|v map per chunk of queries, contractions
  as broadcast-multiply + reduce on cache-sized chunks (no einsum copies), autograd through PyTorch.

Both compute the sampling locations with the very same floating-point steps as the reference, so the
outputs and gradients agree to rounding (tested to 1e-5 in fp32).
"""
import importlib
import os
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .node_sampling import walk_to_grid

NUM_SAMPLES = 9

_EXT = None
_EXT_ERROR: Optional[str] = None


def load_extension():
    """The compiled kernel (``dgmn_mm._sampled_attention_cpp``) or None. ``DGMN_MM_DISABLE_EXT=1`` hides it."""
    global _EXT, _EXT_ERROR
    if os.environ.get('DGMN_MM_DISABLE_EXT', '0') == '1':
        return None
    if _EXT is None and _EXT_ERROR is None:
        try:
            _EXT = importlib.import_module('dgmn_mm._sampled_attention_cpp')
        except Exception as e:  # not built (see dgmn_mm/csrc/build.py) or ABI mismatch
            _EXT_ERROR = f'{type(e).__name__}: {e}'
    return _EXT


def extension_available() -> bool:
    return load_extension() is not None


# --------------------------------------------------------------------------------------------------------
# C++ backend
# --------------------------------------------------------------------------------------------------------
class _SampledAttentionFunction(torch.autograd.Function):
    """out (B, N, C) = sampled attention of qkv (B, N, 3C), walks (B, N, h, 18) and RelPos (B, h, N, 9)."""

    @staticmethod
    def forward(ctx, qkv: Tensor, walk: Tensor, pos: Tensor, hw_shape: Tuple[int, int], num_heads: int,
                scale: float):
        ext = load_extension()
        H, W = hw_shape
        out, attn = ext.forward(qkv, walk, pos, H, W, num_heads, scale)
        ctx.save_for_backward(qkv, walk, attn)
        ctx.hw_shape, ctx.num_heads, ctx.scale = (H, W), num_heads, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        qkv, walk, attn = ctx.saved_tensors
        H, W = ctx.hw_shape
        # rows a query can write to in the backward scatter: |dy| + 3 (3 x 3 taps, bilinear corners, slack)
        dy = walk.view(*walk.shape[:-1], NUM_SAMPLES, 2)[..., 0]
        max_dy = float(dy.abs().max()) if dy.numel() else 0.
        reach = int(max_dy) + 3 if max_dy == max_dy and max_dy < H else -1  # -1: unbounded (or NaN)
        gqkv, gwalk, gpos = load_extension().backward(
            grad_out.contiguous(), qkv, walk, attn, H, W, ctx.num_heads, ctx.scale, reach,
            ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        return (gqkv if ctx.needs_input_grad[0] else None, gwalk if ctx.needs_input_grad[1] else None,
                gpos if ctx.needs_input_grad[2] else None, None, None, None)


def sampled_attention_cpp(qkv: Tensor, walk: Tensor, pos: Tensor, hw_shape: Tuple[int, int], num_heads: int,
                          scale: float) -> Tensor:
    """Fused kernel. qkv (B, N, 3C), walk (B, N, h, 2K) as (dy, dx) pairs, pos (B, h, N, K) -> (B, N, C)."""
    return _SampledAttentionFunction.apply(qkv.contiguous(), walk.contiguous(), pos.contiguous(), hw_shape,
                                           num_heads, scale)


class _RelPosRowsFunction(torch.autograd.Function):
    """r[b, j, n, t] = q[b, j, n] . rows[x (by_column) or y of n, t] with q read from qkv (B, N, 3C)."""

    @staticmethod
    def forward(ctx, qkv: Tensor, rows: Tensor, hw_shape: Tuple[int, int], num_heads: int, by_column: bool):
        H, W = hw_shape
        ctx.save_for_backward(qkv, rows)
        ctx.hw_shape, ctx.num_heads, ctx.by_column = hw_shape, num_heads, by_column
        return load_extension().relpos_rows(qkv, rows, H, W, num_heads, by_column)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        qkv, rows = ctx.saved_tensors
        H, W = ctx.hw_shape
        B, N, C3 = qkv.shape
        nh = ctx.num_heads
        d = C3 // 3 // nh
        g = grad.view(B, nh, H, W, NUM_SAMPLES)
        q = qkv[..., :C3 // 3].view(B, H, W, nh, d)
        eq_q, eq_r = ('bjyxt,xtd->byxjd', 'bjyxt,byxjd->xtd') if ctx.by_column else \
            ('bjyxt,ytd->byxjd', 'bjyxt,byxjd->ytd')
        gqkv = grows = None
        if ctx.needs_input_grad[0]:
            gq = torch.einsum(eq_q, g, rows).reshape(B, N, C3 // 3)
            gqkv = F.pad(gq, (0, 2 * C3 // 3))
        if ctx.needs_input_grad[1]:
            grows = torch.einsum(eq_r, g, q)
        return gqkv, grows, None, None, None


def relpos_cpp(rel_pos, qkv: Tensor, hw_shape: Tuple[int, int], num_heads: int) -> Tensor:
    """:class:`RelPosEmb` of the q part of qkv (B, N, 3C) -> (B, h, N, K), the 9-slot dot products in C++
    (no copy of q), the official transposition / resize of the height term in PyTorch as in RelPosEmb."""
    from ..backbones.dgmn2 import resize_rel_table, slot_rows
    B, N, C3 = qkv.shape
    H, W = hw_shape
    K, nh = NUM_SAMPLES, num_heads
    dt = qkv.dtype
    rows_w = slot_rows(resize_rel_table(rel_pos.rel_width, W + K - 1), W, K).to(dt).contiguous()
    rows_h = slot_rows(resize_rel_table(rel_pos.rel_height, H + K - 1), H, K).to(dt).contiguous()
    r_w = _RelPosRowsFunction.apply(qkv, rows_w, hw_shape, nh, True).view(B, nh, H, W, K)
    r_h = _RelPosRowsFunction.apply(qkv, rows_h, hw_shape, nh, False).view(B, nh, H, W, K)
    if rel_pos.mode == 'official':
        r_h = r_h.transpose(2, 3)  # (B, h, W, H, K): added as if it were (H, W)
        if H != W:
            r_h = F.interpolate(r_h.reshape(B * nh, W, H, K).permute(0, 3, 1, 2), size=(H, W), mode='bilinear',
                                align_corners=False)
            r_h = r_h.permute(0, 2, 3, 1).reshape(B, nh, H, W, K)
    return (r_w + r_h).reshape(B, nh, N, K)


# --------------------------------------------------------------------------------------------------------
# Pure-PyTorch backend
# --------------------------------------------------------------------------------------------------------
def sampled_attention_torch(qkv: Tensor, walk: Tensor, pos: Tensor, hw_shape: Tuple[int, int], num_heads: int,
                            scale: float, attn_drop: Optional[torch.nn.Module] = None,
                            chunk_size: int = 2048) -> Tensor:
    """Same contract as :func:`sampled_attention_cpp`, in PyTorch ops (any device, autograd).

    One ``grid_sample`` per chunk of queries on the (B h, 2d, H, W) k|v map with a (B h, K, n, 2) grid, so
    the samples come out as (B h, 2d, K, n) with the query index innermost; the logits and the weighted sum
    are then broadcast-multiply + reduce over d and K on cache-sized chunks.
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
    outs = []
    for n0 in range(0, N, chunk_size):
        n1 = min(N, n0 + chunk_size)
        s = F.grid_sample(kv, grid[:, :, n0:n1], mode='bilinear', padding_mode='zeros', align_corners=False)
        logits = (q[:, :, None, n0:n1] * s[:, :d]).sum(1) * scale + pos[:, :, n0:n1]  # (Bh, K, n)
        attn = logits.softmax(dim=1)
        if attn_drop is not None:
            attn = attn_drop(attn)
        outs.append((s[:, d:] * attn[:, None]).sum(2))  # (Bh, d, n)
    out = torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]
    return out.view(B, nh, d, N).permute(0, 3, 1, 2).reshape(B, N, C)


# --------------------------------------------------------------------------------------------------------
# The layer-level fast forward
# --------------------------------------------------------------------------------------------------------
def choose_backend(x: Tensor, training_dropout: bool) -> str:
    if x.device.type == 'cpu' and not training_dropout and extension_available():
        return 'cpp'
    return 'torch'


def dgmn2_attention_fast(module, x: Tensor, hw_shape: Tuple[int, int], backend: Optional[str] = None) -> Tensor:
    """Fast forward of a :class:`~dgmn_mm.models.backbones.dgmn2.DGMN2Attention` (same parameters).

    The qkv and walk Linears and the RelPos term are evaluated as in the reference; the sampling,
    softmax and weighted sum run fused in fp32 (under autocast the inputs are upcast for it).
    """
    B, N, C = x.shape
    H, W = hw_shape
    if N != H * W:
        raise ValueError(f'x has {N} tokens, hw_shape {hw_shape} needs {H * W}')
    nh, d = module.num_heads, module.head_dims
    drop = module.attn_drop if (module.training and module.attn_drop.p > 0) else None
    if backend is None:
        backend = choose_backend(x, drop is not None)
    qkv = module.qkv(x)  # (B, N, 3C), autocast may make it low precision
    with torch.autocast(device_type=x.device.type, enabled=False):
        # walks and sampling in fp32 (or the input dtype when it is wider)
        cdtype = torch.promote_types(qkv.dtype, torch.float32)
        xw = x.to(cdtype).reshape(B, N, nh, d)
        walk = F.linear(xw, module.walk.weight.to(cdtype),
                        None if module.walk.bias is None else module.walk.bias.to(cdtype))  # (B, N, h, 2K)
        qkv32 = qkv.to(cdtype)
        if backend == 'cpp':
            qkv32 = qkv32.contiguous()
            pos = relpos_cpp(module.rel_pos, qkv32, (H, W), nh)
        else:
            q = qkv32.view(B, H, W, 3, nh, d)[:, :, :, 0].permute(0, 3, 1, 2, 4)  # (B, h, H, W, d) view
            pos = module.rel_pos(q).reshape(B, nh, N, NUM_SAMPLES)
        if backend == 'cpp':
            if drop is not None:
                raise ValueError("the 'cpp' backend does not implement attention dropout")
            out = sampled_attention_cpp(qkv32, walk, pos.to(cdtype), (H, W), nh, module.scale)
        elif backend == 'torch':
            out = sampled_attention_torch(qkv32, walk, pos, (H, W), nh, module.scale, drop)
        else:
            raise ValueError(f"backend must be 'cpp' or 'torch', got {backend!r}")
    return module.proj_drop(module.proj(out))


# --------------------------------------------------------------------------------------------------------
# Analytical FLOPs (2 x multiply-accumulates; softmax, norms and activations not counted)
# --------------------------------------------------------------------------------------------------------
def dgmn2_attention_flops(num_tokens: int, embed_dims: int, num_heads: int, height: Optional[int] = None,
                          width: Optional[int] = None, num_samples: int = NUM_SAMPLES) -> int:
    """FLOPs of one DGMN2 attention layer on N tokens (both paths compute the same maths):

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

"""Fast forward of :class:`~dgmn_mm.models.backbones.dgmn2.DGMN2Attention` (``attn_impl='fast'``).

Same maths as the reference path ("Dynamic Graph Message Passing Networks for Visual Recognition", TPAMI
2022, Eqs. 4, 8, 9): per query and head, 9 nodes sampled bilinearly along the predicted walks,
``softmax(q.k / sqrt(d) + r)`` over them, weighted sum of the sampled values. The reference samples keys
and values separately into two (B, h, N, d, 9) tensors and contracts them with einsums; the fast path calls
the operators of :mod:`dgmn_mm.ops` (``dgmn_mm::relpos_rows``, ``dgmn_mm::sampled_attention``), which
never materialise N x 9 x d and run the C++ kernel on CPU, Triton on CUDA or PyTorch (see
:mod:`dgmn_mm.ops.backend`).

Two cases use the pure-PyTorch formulation directly instead of the operators:

* attention dropout in training (the kernels do not implement it);
* ONNX export (``torch.onnx.export``, dynamo exporter): the graph records standard ops only (one
  ``grid_sample`` = ONNX GridSample, einsum / MatMul, Softmax) with the RelPos indices computed from the
  dynamic input size, so the exported model is right at every input size.

The TorchScript ONNX exporter (``dynamo=False``) is refused with an error (see ``DGMN2Attention.forward``).

Training on CPU with the C++ kernel (:class:`_RelPosSampledAttentionCPU`): the same two operators run
forward, but their backward is joined, so that qkv gets one (B, N, 3C) gradient instead of three (the
sampled attention's, and one zero-padded q gradient per RelPos term, which autograd then sums): the
RelPos q gradients are added in place into the q part of the sampled attention's gradient.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops import backend as _backend
from .buffer_cache import cached_linear, get_buffer_cache
from ...ops.linear import _dispatch_mode_active, linear
from ...ops.geometry import NUM_SAMPLES, combine_relpos, combine_relpos_backward, relpos_rows_pair
from ...ops.attention import (_check, dgmn2_attention_flops, dgmn2_core_flops, relpos, sampled_attention,
                                      sampled_attention_torch)

__all__ = ['NUM_SAMPLES', 'dgmn2_attention_fast', 'dgmn2_attention_flops', 'dgmn2_core_flops',
           'extension_available', 'load_extension', 'sampled_attention', 'sampled_attention_torch']

load_extension = _backend.load_extension


def extension_available() -> bool:
    """Whether the C++ kernel imports (it runs on CPU unless ``DGMN_MM_ATTN_BACKEND`` says otherwise)."""
    return _backend.load_extension() is not None


class _RelPosSampledAttentionCPU(torch.autograd.Function):
    """``sampled_attention(qkv, walk, relpos(qkv, rows_w, rows_h))`` with a joined backward (CPU, C++ kernel).

    Forward: the operators ``dgmn_mm::relpos_rows`` (twice), :func:`~dgmn_mm.ops.geometry.combine_relpos`
    and ``dgmn_mm::sampled_attention``, exactly as :func:`~dgmn_mm.ops.attention.relpos` followed by
    :func:`~dgmn_mm.ops.attention.sampled_attention` (same values). Backward: the operator
    ``dgmn_mm::sampled_attention_backward`` gives the (B, N, 3C) qkv gradient and the logit gradient; the
    latter goes back through ``combine_relpos`` (in closed form, :func:`~dgmn_mm.ops.geometry.
    combine_relpos_backward`: no graph, no zero tensors, no copy of the width term) and the kernel's
    ``relpos_rows_backward`` adds the RelPos q gradients in place into that qkv gradient and returns the
    table-row gradients (for square maps and in mode 'corrected', both terms in one pass,
    ``relpos_rows_backward_pair``, which reads the transposed height-term gradient in place; same values).
    Through the separate operators, autograd would allocate a zero-padded (B, N, 3C)
    tensor per RelPos term and add them (for a stage-1 layer of a 512 x 512 batch of 2: three 25 MB
    tensors, fresh pages each). Same gradients up to the order of the three additions (~1 ulp).

    Inputs: qkv (B, N, 3C) contiguous, walk (B, N, h, 2K), rows_w (W, K, d), rows_h (H, K, d) contiguous,
    all of one dtype (fp32 / fp64); H, W, num_heads, scale, mode.
    """

    @staticmethod
    def forward(ctx, qkv, walk, rows_w, rows_h, H: int, W: int, num_heads: int, scale: float, mode: str):
        B, N, _ = qkv.shape
        shape = (B, num_heads, H, W, NUM_SAMPLES)
        r_w = torch.ops.dgmn_mm.relpos_rows(qkv, rows_w, H, W, num_heads, True).view(shape)
        r_h = torch.ops.dgmn_mm.relpos_rows(qkv, rows_h, H, W, num_heads, False).view(shape)
        pos = combine_relpos(r_w, r_h, mode).reshape(B, num_heads, N, NUM_SAMPLES).contiguous()
        out, attn = torch.ops.dgmn_mm.sampled_attention(qkv, walk, pos, H, W, num_heads, scale)
        ctx.save_for_backward(qkv, walk, pos, attn, rows_w, rows_h)
        ctx.params = (H, W, num_heads, scale, mode)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        qkv, walk, pos, attn, rows_w, rows_h = ctx.saved_tensors
        H, W, nh, scale, mode = ctx.params
        need_qkv, need_walk, need_rw, need_rh = ctx.needs_input_grad[:4]
        need_pos = need_qkv or need_rw or need_rh
        gqkv, gwalk, gpos = torch.ops.dgmn_mm.sampled_attention_backward(
            grad_out.contiguous(), qkv, walk, pos, attn, H, W, nh, scale, need_walk, need_pos)
        grows_w = grows_h = None
        ext = _backend.load_extension()
        if need_pos and mode in ('official', 'corrected') and (mode == 'corrected' or H == W) and hasattr(
                ext, 'relpos_rows_backward_pair'):
            # both terms in one pass: combine_relpos's gradient is gpos for the width term and gpos (or, in mode
            # 'official', its transpose, read in place) for the height term; same values as the loop below
            grows_w, grows_h = ext.relpos_rows_backward_pair(gpos, gpos, mode == 'official', qkv, rows_w, rows_h, H, W,
                                                             nh, need_qkv, need_rw, need_rh, gqkv)
            grows_w, grows_h = (grows_w if need_rw else None), (grows_h if need_rh else None)
        elif need_pos:
            B = qkv.shape[0]
            # combine_relpos is linear: closed-form gradients (g_rw is gpos itself, g_rh gpos or its transpose)
            g_rw, g_rh = combine_relpos_backward(gpos.view(B, nh, H, W, NUM_SAMPLES), mode)
            for g, rows, by_column, need_rows in ((g_rw, rows_w, True, need_rw), (g_rh, rows_h, False, need_rh)):
                _, grows = ext.relpos_rows_backward(g.reshape(B, nh, H * W, NUM_SAMPLES).contiguous(), qkv, rows, H,
                                                    W, nh, by_column, need_qkv, need_rows, True, gqkv)
                if by_column:
                    grows_w = grows if need_rows else None
                else:
                    grows_h = grows if need_rows else None
        return ((gqkv if need_qkv else None), (gwalk if need_walk else None), grows_w, grows_h,
                None, None, None, None, None)


def _joined_backward_applies(qkv: Tensor, walk: Tensor, rel) -> bool:
    """Whether :class:`_RelPosSampledAttentionCPU` runs: an autograd graph is recorded, CPU tensors with the
    C++ kernel chosen (and built with ``relpos_rows_backward``), fp32 / fp64, not compiled or traced
    (those see the operators)."""
    if not (torch.is_grad_enabled() and (qkv.requires_grad or walk.requires_grad or rel.rel_width.requires_grad
                                         or rel.rel_height.requires_grad)):
        return False
    if (qkv.device.type != 'cpu' or qkv.dtype not in (torch.float32, torch.float64)
            or torch.compiler.is_compiling() or torch.jit.is_tracing()):
        return False
    if _backend.resolve('cpu') != 'cpp':
        return False
    return hasattr(_backend.load_extension(), 'relpos_rows_backward')


def dgmn2_attention_fast(module, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
    """Fast forward of a :class:`~dgmn_mm.models.backbones.dgmn2.DGMN2Attention` (same parameters).

    The qkv and walk Linears are evaluated as in the reference; the RelPos term, the sampling, softmax and
    weighted sum run in fp32 (under autocast the inputs are upcast for them).
    """
    B, N, C = x.shape
    H, W = hw_shape
    if N != H * W:
        raise ValueError(f'x has {N} tokens, hw_shape {hw_shape} needs {H * W}')
    nh, d = module.num_heads, module.head_dims
    drop = module.attn_drop if (module.training and module.attn_drop.p > 0) else None
    exporting = torch.onnx.is_in_onnx_export()
    # (B, N, 3C), autocast may make it low precision; without autograd it reuses one buffer (no fresh pages)
    if torch.is_grad_enabled() and (x.requires_grad or module.qkv.weight.requires_grad):
        qkv = linear(x, module.qkv.weight, module.qkv.bias)  # oneDNN on fp32 CPU (dgmn_mm.ops.linear)
    else:
        qkv = cached_linear(module.qkv, x, 'dgmn2_attention.qkv')
    with torch.autocast(device_type=x.device.type, enabled=False):
        # walks and sampling in fp32 (or the input dtype when it is wider)
        cdtype = torch.promote_types(qkv.dtype, torch.float32)
        xw = x.to(cdtype).reshape(B, N, nh, d)
        walk = linear(xw, module.walk.weight.to(cdtype),
                      None if module.walk.bias is None else module.walk.bias.to(cdtype))  # (B, N, h, 2K)
        qkv32 = qkv.to(cdtype).contiguous()
        if drop is not None or exporting:
            q = qkv32.view(B, H, W, 3, nh, d)[:, :, :, 0].permute(0, 3, 1, 2, 4)  # (B, h, H, W, d) view
            pos = module.rel_pos(q).reshape(B, nh, N, NUM_SAMPLES).to(cdtype)
            out = sampled_attention_torch(qkv32, walk, pos, (H, W), nh, module.scale, drop,
                                          chunk_size=None if exporting else 2048)
        elif _joined_backward_applies(qkv32, walk, module.rel_pos):
            rel = module.rel_pos
            rows_w, rows_h = relpos_rows_pair(rel.rel_width, rel.rel_height, H, W)
            out = _RelPosSampledAttentionCPU.apply(qkv32, walk.contiguous(), rows_w.to(cdtype).contiguous(),
                                                   rows_h.to(cdtype).contiguous(), H, W, nh,
                                                   float(module.scale), rel.mode)
        else:
            rel = module.rel_pos
            pos = relpos(qkv32, rel.rel_width, rel.rel_height, (H, W), nh, rel.mode).to(cdtype)
            out = _sampled_attention_into_cache(qkv32, walk, pos, H, W, nh, module.scale)
            if out is None:
                out = sampled_attention(qkv32, walk, pos, (H, W), nh, module.scale)
    return module.proj_drop(linear(out, module.proj.weight, module.proj.bias))


def _sampled_attention_into_cache(qkv: Tensor, walk: Tensor, pos: Tensor, H: int, W: int, nh: int, scale: float):
    """Inference on CPU with the C++ kernel: the (B, N, C) output written into the buffer cache (key
    ``'dgmn2_attention.out'``, see :mod:`.buffer_cache`) instead of a fresh tensor, so a large map's output
    (33.5 MB for a stage-1 layer at 1024 x 2048) is not new pages on every call. Same kernel, same values; the
    result is consumed by ``proj`` before the next layer overwrites it. None where it does not apply: an
    autograd graph, tracing, compile, export, a Python dispatch mode, other devices or backends, a kernel
    built without ``forward_into``."""
    if (torch.is_grad_enabled() and (qkv.requires_grad or walk.requires_grad or pos.requires_grad)) or \
            torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export() or \
            _dispatch_mode_active() or qkv.device.type != 'cpu' or _backend.resolve('cpu') != 'cpp':
        return None
    ext = _backend.load_extension()
    if not hasattr(ext, 'forward_into'):
        return None
    _check(qkv, walk, pos, H, W, nh)
    B, N, C3 = qkv.shape
    out = get_buffer_cache().get('dgmn2_attention.out', (B, N, C3 // 3), qkv.dtype, qkv.device)
    ext.forward_into(qkv.contiguous(), walk.contiguous(), pos.contiguous(), H, W, nh, float(scale), out)
    return out

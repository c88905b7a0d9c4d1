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
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops import backend as _backend
from .buffer_cache import cached_linear
from ...ops.geometry import NUM_SAMPLES
from ...ops.attention import (dgmn2_attention_flops, dgmn2_core_flops, relpos, sampled_attention,
                                      sampled_attention_torch)

__all__ = ['NUM_SAMPLES', 'dgmn2_attention_fast', 'dgmn2_attention_flops', 'dgmn2_core_flops',
           'extension_available', 'load_extension', 'sampled_attention', 'sampled_attention_torch']

load_extension = _backend.load_extension


def extension_available() -> bool:
    """Whether the C++ kernel imports (it runs on CPU unless ``DGMN_MM_ATTN_BACKEND`` says otherwise)."""
    return _backend.load_extension() is not None


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
    qkv = cached_linear(module.qkv, x, 'dgmn2_attention.qkv')
    with torch.autocast(device_type=x.device.type, enabled=False):
        # walks and sampling in fp32 (or the input dtype when it is wider)
        cdtype = torch.promote_types(qkv.dtype, torch.float32)
        xw = x.to(cdtype).reshape(B, N, nh, d)
        walk = F.linear(xw, module.walk.weight.to(cdtype),
                        None if module.walk.bias is None else module.walk.bias.to(cdtype))  # (B, N, h, 2K)
        qkv32 = qkv.to(cdtype).contiguous()
        if drop is not None or exporting:
            q = qkv32.view(B, H, W, 3, nh, d)[:, :, :, 0].permute(0, 3, 1, 2, 4)  # (B, h, H, W, d) view
            pos = module.rel_pos(q).reshape(B, nh, N, NUM_SAMPLES).to(cdtype)
            out = sampled_attention_torch(qkv32, walk, pos, (H, W), nh, module.scale, drop,
                                          chunk_size=None if exporting else 2048)
        else:
            rel = module.rel_pos
            pos = relpos(qkv32, rel.rel_width, rel.rel_height, (H, W), nh, rel.mode).to(cdtype)
            out = sampled_attention(qkv32, walk, pos, (H, W), nh, module.scale)
    return module.proj_drop(module.proj(out))

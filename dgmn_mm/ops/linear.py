"""Linear layers of the fast DGMN2 path through oneDNN on CPU.

On CPU, ``F.linear`` / ``nn.Linear`` run MKL's ``sgemm`` after copying the bias into the output
(``addmm``). oneDNN's inner-product primitive (``torch.ops.mkldnn._linear_pointwise``, the kernel that
``torch.compile`` uses for CPU linears) adds the bias while the output tile is still in registers, and on
the AVX-512 CPU this was developed on it ran the GEMM shapes of DGMN2-Tiny (2048-32768 tokens, 64-1280
channels, 1 thread) at 74-109 GFLOP/s against MKL's 61-78: the forward and the input-gradient products.
Weight gradients (``g^T x``, a long reduction over tokens) stay with MKL, which was faster for them (63-86
vs 37-74 GFLOP/s). oneDNN's fused GELU (``gelu_erf`` post-op) was slower than ATen's ``F.gelu`` after the
GEMM (~2.4 vs ~1.4 ns per element), so activations stay ATen's.

Numerics: fp32 products accumulated in fp32 by both libraries in different orders (differences at the
1e-7 relative level). Used for fp32 CPU tensors only, without autocast; never while tracing, compiling or
exporting, nor under a Python dispatch mode such as ``torch.utils.flop_counter.FlopCounterMode`` (those
see the plain ``F.linear``), so exported and compiled graphs and FLOP counts are unchanged. Everything
else (other devices or dtypes, a PyTorch built without oneDNN) runs ``F.linear``.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['onednn_linear_applies', 'onednn_linear', 'linear']

_AVAILABLE: Optional[bool] = None  # whether torch has oneDNN's linear; probed once


def _onednn_available() -> bool:
    global _AVAILABLE
    if _AVAILABLE is None:
        try:
            _AVAILABLE = bool(torch.backends.mkldnn.is_available()
                              and hasattr(torch.ops.mkldnn, '_linear_pointwise'))
        except (AttributeError, RuntimeError):
            _AVAILABLE = False
    return _AVAILABLE


def _dispatch_mode_active() -> bool:
    """A Python dispatch mode (``torch.utils.flop_counter.FlopCounterMode``, fake tensors, debug modes) is
    watching the ops: it is shown ``aten::linear``'s decomposition, which it knows, not the oneDNN op."""
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # pragma: no cover
        return False
    return _get_current_dispatch_mode() is not None


def onednn_linear_applies(x: Tensor, weight: Tensor) -> bool:
    """Whether :func:`linear` runs oneDNN: fp32 CPU input and weight, oneDNN present, no autocast, not
    traced, compiled or exported, no Python dispatch mode (e.g. a FLOP counter) active."""
    if (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()
            or getattr(torch.compiler, 'is_exporting', lambda: False)() or _dispatch_mode_active()):
        return False
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and weight.dtype == torch.float32
            and x.numel() > 0 and _onednn_available() and not torch.is_autocast_enabled('cpu'))


def _needs_graph(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                        or (bias is not None and bias.requires_grad))


def onednn_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """The oneDNN call itself, no autograd: ``x W^T + b``. The caller checks :func:`onednn_linear_applies`.
    ``weight`` may be a transposed view (read without a copy); x is flattened to 2-D (oneDNN was faster
    on 2-D inputs: 84 vs 67 GFLOP/s for DGMN2-Tiny's stage-1 qkv)."""
    y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), weight, bias, 'none', [], '')
    return y.view(*x.shape[:-1], weight.shape[0])


class _OneDNNLinear(torch.autograd.Function):
    """``x W^T + b`` with oneDNN forward and input gradient, MKL weight gradient (see the module doc)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_linear(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        g2 = g.reshape(-1, g.shape[-1])
        gx = gw = gb = None
        if need_x:
            gx = onednn_linear(g2, weight.t(), None).view(x.shape)  # g W (oneDNN reads W^T without a copy)
        if need_w:
            gw = g2.t().mm(x.reshape(-1, x.shape[-1]))
        if need_b and ctx.has_bias:
            gb = g2.sum(0)
        return gx, gw, gb


def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """``F.linear(x, weight, bias)``, through oneDNN where :func:`onednn_linear_applies` (with autograd).

    Shapes: x (..., in), weight (out, in), bias (out,) -> (..., out).
    """
    if not onednn_linear_applies(x, weight) or (bias is not None and bias.dtype != torch.float32):
        return F.linear(x, weight, bias)
    if _needs_graph(x, weight, bias):
        return _OneDNNLinear.apply(x, weight, bias)
    return onednn_linear(x, weight, bias)

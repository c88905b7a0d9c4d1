"""DGMN2: the dynamic graph message passing Transformer backbone.

"Dynamic Graph Message Passing Networks for Visual Recognition", L. Zhang, M. Chen, A. Arnab, X. Xue and
P. H. S. Torr, TPAMI 2022 (Sec. 4). A four-stage pyramid (strides 4/8/16/32) whose attention does not look
at all N tokens: every query samples K = 9 nodes around itself along predicted random walks (Eq. 4), takes
the keys and values of those nodes with a bilinear sampler (Eq. 8) and passes messages with a softmax over
the K nodes plus a relative position term (Eq. 9). Time and memory are linear in N.

The module tree is ``stages[i].patch_embed`` then ``stages[i].blocks[j].{norm1, attn, norm2, ffn}``;
:mod:`.dgmn2_convert` maps the official checkpoints of every released kind (``github:fudan-zvg/DGMN2``) onto
it one key to one key. The computation follows the official code exactly (``classification/dgmn2_block.py``),
including the transposed-height quirk of its relative position encoding, which the released weights were
trained with (``relpos_mode='official'``, the default; ``'corrected'`` is the bug-free variant).
"""
import re
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import MMLogger
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import CheckpointLoader
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ...registry import MODELS
from ...ops import backend as _ops_backend
from ...ops.linear import linear, onednn_linear, onednn_linear_applies
from ...ops.geometry import (NUM_SAMPLES, combine_relpos, relpos_rows_pair, resize_rel_table,  # noqa: F401
                             slot_rows)
from ..layers.node_sampling import sample_nodes
from ..utils.arch import parse_arch
from ..utils.dgmn2_checks import bn_train_stages, check_dgmn2_args, check_dgmn2_input


# --------------------------------------------------------------------------------------------------------
# Relative position encoding (Fig. 4b)
# --------------------------------------------------------------------------------------------------------
# resize_rel_table and slot_rows (the official table resize and the closed form of its "rel_to_abs"
# indexing) live in dgmn_mm.ops.geometry, shared with the fused operators; re-exported here.


class RelPosEmb(nn.Module):
    """Relative position term r of Eq. 9 (Fig. 4b): one table per direction, indexed by the node slot.

    For the query q at (y, x) and node slot j (the official ``rel_to_abs`` indexing in closed form)::

        r[y, x, j] = q[y, x] . W'[W - 1 - x + j] + q[x, y] . H'[H - 1 - x + j]      (mode 'official', H = W)
        r[y, x, j] = q[y, x] . W'[W - 1 - x + j] + q[y, x] . H'[H - 1 - y + j]      (mode 'corrected')

    where W' (H') is ``rel_width`` (``rel_height``) linearly resized to W + K - 1 (H + K - 1) rows. In the
    official code the height term is computed on the transposed query map and added without transposing
    back; for H != W it is bilinearly *resized* from (W, H) to (H, W) instead. 'official' reproduces that
    exactly (the released weights were trained with it); 'corrected' uses the query's own row.

    Args:
        feat_size (tuple[int, int]): (S_h, S_w) the tables were made for (the stage's map at 224 x 224).
        head_dims (int): d.
        mode (str): 'official' or 'corrected'.
    """

    def __init__(self, feat_size: Tuple[int, int], head_dims: int, mode: str = 'official',
                 num_samples: int = NUM_SAMPLES):
        super().__init__()
        if mode not in ('official', 'corrected'):
            raise ValueError(f"relpos mode must be 'official' or 'corrected', got {mode!r}")
        self.mode = mode
        self.num_samples = num_samples
        scale = head_dims ** -0.5
        self.rel_height = nn.Parameter(torch.randn(feat_size[0] + num_samples - 1, head_dims) * scale)
        self.rel_width = nn.Parameter(torch.randn(feat_size[1] + num_samples - 1, head_dims) * scale)

    def forward(self, q: Tensor) -> Tensor:
        """q: (B, h, H, W, d) -> r: (B, h, H, W, K)."""
        B, nh, H, W, d = q.shape
        K = self.num_samples
        rows_w, rows_h = relpos_rows_pair(self.rel_width, self.rel_height, H, W, K)  # (W, K, d), (H, K, d)
        r_w = torch.einsum('bnyxd,xkd->bnyxk', q, rows_w)
        r_h = torch.einsum('bnyxd,ykd->bnyxk', q, rows_h)  # the official T[x, y], stored at [y, x]
        return combine_relpos(r_w, r_h, self.mode)


# --------------------------------------------------------------------------------------------------------
# DGMN2 attention (Fig. 4a, Eqs. 4, 8, 9)
# --------------------------------------------------------------------------------------------------------
class DGMN2Attention(nn.Module):
    """Dynamic graph message passing as attention over K sampled nodes.

    Per head (d = C / h channels), for the query node i at (y, x):

    - Eq. 4, random walks: ``Delta d_i = W_walk h_i + b`` (a Linear(d, 2K) shared by all heads, applied to
      the normed input, *not* to q), giving K walks (dy_k, dx_k) around the 3 x 3 neighbourhood of i;
    - Eq. 8, bilinear sampler rho: keys k_j and values v_j of the K nodes at ``p_k = (y-1+a+dy_k,
      x-1+b+dx_k)``, zeros outside the map;
    - Eq. 9, messages: ``m_i = sum_j softmax_j(q_i . k_j / sqrt(d) + r_ij) v_j``, then ``proj``.

    Args:
        embed_dims (int): C.
        num_heads (int): h.
        feat_size (tuple[int, int]): map size of the stage at the pre-training resolution (RelPos tables).
        qkv_bias (bool): bias of qkv and of the walk predictor. Defaults to True.
        attn_drop (float): dropout on the K attention weights. Defaults to 0.
        proj_drop (float): dropout after ``proj``. Defaults to 0.
        relpos_mode (str): see :class:`RelPosEmb`. Defaults to 'official'.
        attn_impl (str): 'fast' (default: fused sampling + softmax + weighted sum that never materialises
            N x K x d, a C++/OpenMP kernel on CPU when built, else pure PyTorch; see
            :mod:`dgmn_mm.models.layers.sampled_attention`) or 'reference' (straightforward: sample k and v
            separately into (B, h, N, d, K) tensors, then contract). Same outputs and gradients. 'fast' also
            runs qkv, the walk predictor and proj through oneDNN on fp32 CPU tensors (:mod:`dgmn_mm.ops.linear`).
    """
    impls = ('reference', 'fast')

    def __init__(self, embed_dims: int, num_heads: int, feat_size: Tuple[int, int], qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., relpos_mode: str = 'official',
                 attn_impl: str = 'fast'):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}')
        if attn_impl not in self.impls:
            raise ValueError(f'attn_impl must be one of {self.impls}, got {attn_impl!r}')
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.head_dims = embed_dims // num_heads
        self.num_samples = NUM_SAMPLES
        self.scale = self.head_dims ** -0.5
        self.attn_impl = attn_impl
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.walk = nn.Linear(self.head_dims, 2 * self.num_samples, bias=qkv_bias)  # official: conv_offset
        self.rel_pos = RelPosEmb(feat_size, self.head_dims, relpos_mode)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def predict_walk(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """Eq. 4. x: (B, N, C) normed tokens -> walks (B * h, H, W, K, 2), last dim (dy, dx) in pixels."""
        B, N, _ = x.shape
        H, W = hw_shape
        walk = self.walk(x.reshape(B, N, self.num_heads, self.head_dims))  # (B, N, h, 2K)
        walk = walk.view(B, H, W, self.num_heads, self.num_samples, 2)
        return walk.permute(0, 3, 1, 2, 4, 5).reshape(B * self.num_heads, H, W, self.num_samples, 2)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """x: (B, N, C) with N = H * W (row-major) -> (B, N, C)."""
        if torch.jit.is_tracing() and torch.onnx.is_in_onnx_export():
            raise RuntimeError(
                'DGMN2 cannot be exported with the TorchScript ONNX exporter (dynamo=False): it records the '
                'map sizes and RelPos indices as constants, so the graph would be wrong at other input sizes. '
                'Use torch.onnx.export(..., dynamo=True) (the default) or tools/deployment/pytorch2onnx.py.')
        if self.attn_impl == 'fast':
            from ..layers.sampled_attention import dgmn2_attention_fast
            return dgmn2_attention_fast(self, x, hw_shape)
        return self.forward_reference(x, hw_shape)

    def forward_reference(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        """The straightforward path (``attn_impl='reference'``), kept for verification."""
        B, N, C = x.shape
        H, W = hw_shape
        nh, d, K = self.num_heads, self.head_dims, self.num_samples
        q, k, v = self.qkv(x).reshape(B, N, 3, nh, d).permute(2, 0, 3, 1, 4)  # each (B, h, N, d)
        walk = self.predict_walk(x, hw_shape)
        # Eq. 8: keys and values of the K sampled nodes (same locations for both)
        k_s = sample_nodes(k.transpose(2, 3).reshape(B * nh, d, H, W), walk).view(B * nh, d, N, K)
        v_s = sample_nodes(v.transpose(2, 3).reshape(B * nh, d, H, W), walk).view(B * nh, d, N, K)
        # Eq. 9: softmax over the K nodes of q.k / sqrt(d) + r, then the weighted sum of the values
        q = q.reshape(B * nh, N, d)
        attn = torch.einsum('bnd,bdnk->bnk', q, k_s) * self.scale
        attn = attn + self.rel_pos(q.reshape(B, nh, H, W, d)).reshape(B * nh, N, K)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = torch.einsum('bnk,bdnk->bnd', attn, v_s)
        out = out.view(B, nh, N, d).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(out))


class FFN(nn.Module):
    """Transformer feed-forward: fc1 -> GELU -> dropout -> fc2 -> dropout (no depth-wise conv).

    Args:
        embed_dims (int): C.
        hidden_dims (int): r C.
        drop (float): dropout rate. Defaults to 0.
        onednn (bool): run the two Linears through oneDNN on fp32 CPU tensors (:mod:`dgmn_mm.ops.linear`);
            the fast path's blocks set it. Same parameters and results (to fp32 summation order).
            Defaults to False (``nn.Linear``).
    """

    def __init__(self, embed_dims: int, hidden_dims: int, drop: float = 0., onednn: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)
        self.onednn = onednn

    def forward(self, x: Tensor) -> Tensor:
        if self.onednn:
            h = self.drop(self.act(linear(x, self.fc1.weight, self.fc1.bias)))
            return self.drop(linear(h, self.fc2.weight, self.fc2.bias))
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


def _gelu_forward_backward_kernel(x: Tensor):
    """The C++ kernel's ``gelu_forward_backward(h, g) -> (GELU(h), g GELU'(h))`` for fp32 CPU tensors when
    the C++ backend runs (AVX2 / AVX-512 builds; one exp and one erf per value instead of ATen's gelu +
    gelu_backward), else None."""
    if x.device.type != 'cpu' or x.dtype != torch.float32 or _ops_backend.resolve('cpu') != 'cpp':
        return None
    return getattr(_ops_backend.load_extension(), 'gelu_forward_backward', None)


class _ChunkedNormFFNResidual(torch.autograd.Function):
    """``y = x + fc2(GELU(fc1(LN(x))))`` over chunks of rows, for training.

    Autograd on the plain form keeps LN(x), fc1(.) and GELU(.) of every token for the backward (1 + 2r
    times the size of x: 17 x for r = 8) and allocates them, and their gradients, as whole-map tensors on
    every step (above glibc's 32 MB mmap threshold each is fresh pages, ~0.55 ms per MB to first touch on a
    VM). Here only x is kept; the forward and the backward go through ``chunk`` rows at a time, and the
    backward recomputes LN, fc1 and GELU of its chunk (one more fc1 GEMM) before the usual steps. Per token
    the same ATen ops run on the same values (``native_layer_norm``, ``addmm``, ``gelu``,
    ``gelu_backward``, ``native_layer_norm_backward``), so outputs and the input gradient are those of the
    plain form; weight gradients are sums of per-chunk products (summation order differs, ~1e-7 relative).

    With ``onednn`` (the fast path, fp32 on CPU) the products that MKL's ``addmm`` / ``mm`` would compute
    in the forward and for the input gradients run through oneDNN instead (:mod:`dgmn_mm.ops.linear`, bias
    added in the GEMM); weight gradients stay ``addmm_``; the backward's GELU and GELU gradient come from
    one pass of the C++ kernel when it is loaded (:func:`_gelu_forward_backward_kernel`). The values differ
    from the plain form's by the summation order of the products (~1e-7 relative) and a few ulp in GELU.

    Inputs: x2d (M, C) contiguous, LN weight/bias, fc1 weight/bias, fc2 weight/bias, eps, chunk (rows),
    onednn (bool).
    """

    @staticmethod
    def forward(ctx, x2d, ln_w, ln_b, w1, b1, w2, b2, eps: float, chunk: int, onednn: bool = False):
        C = x2d.shape[1]
        y = torch.empty_like(x2d)
        for s in range(0, x2d.shape[0], chunk):
            xc, yc = x2d[s:s + chunk], y[s:s + chunk]
            ln = torch.native_layer_norm(xc, (C, ), ln_w, ln_b, eps)[0]
            if onednn:
                torch.add(onednn_linear(F.gelu(onednn_linear(ln, w1, b1)), w2, b2), xc, out=yc)
                continue
            h = F.gelu(torch.addmm(b1, ln, w1.t()))
            torch.addmm(b2, h, w2.t(), out=yc)
            yc.add_(xc)  # x + ffn(LN(x)) (a + b == b + a in floating point)
        ctx.save_for_backward(x2d, ln_w, ln_b, w1, b1, w2, b2)
        ctx.eps, ctx.chunk, ctx.onednn = eps, chunk, onednn
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        x2d, ln_w, ln_b, w1, b1, w2, b2 = ctx.saved_tensors
        eps, chunk, C = ctx.eps, ctx.chunk, x2d.shape[1]
        gelu_fwd_bwd = None
        if ctx.onednn:  # h = LN(x) W1^T + b1, g W2, g_h W1
            fc1, g_fc2, g_fc1 = (lambda a: onednn_linear(a, w1, b1), lambda g: onednn_linear(g, w2.t(), None),
                                 lambda g: onednn_linear(g, w1.t(), None))
            gelu_fwd_bwd = _gelu_forward_backward_kernel(x2d)
        else:
            fc1, g_fc2, g_fc1 = lambda a: torch.addmm(b1, a, w1.t()), lambda g: g.mm(w2), lambda g: g.mm(w1)
        need = ctx.needs_input_grad
        gy = gy.contiguous()
        gx = torch.empty_like(x2d) if need[0] else None
        g_lnw, g_lnb, gw1, gb1, gw2, gb2 = (torch.zeros_like(t) if n else None
                                            for t, n in zip((ln_w, ln_b, w1, b1, w2, b2), need[1:7]))
        mask = [need[0], need[1], need[2]]
        for s in range(0, x2d.shape[0], chunk):
            xc, g = x2d[s:s + chunk], gy[s:s + chunk]
            ln, mean, rstd = torch.native_layer_norm(xc, (C, ), ln_w, ln_b, eps)
            h = fc1(ln)
            if gelu_fwd_bwd is not None:  # GELU(h) and its backward in one pass (the fast path's kernel)
                a, gh = gelu_fwd_bwd(h, g_fc2(g))
            else:
                a, gh = F.gelu(h), None
            if gw2 is not None:
                gw2.addmm_(g.t(), a)
            if gb2 is not None:
                gb2 += g.sum(0)
            if gh is None:
                gh = torch.ops.aten.gelu_backward(g_fc2(g), h)
            if gw1 is not None:
                gw1.addmm_(gh.t(), ln)
            if gb1 is not None:
                gb1 += gh.sum(0)
            if any(mask):
                gxc, gw, gb = torch.ops.aten.native_layer_norm_backward(g_fc1(gh), xc, (C, ), mean, rstd, ln_w,
                                                                        ln_b, mask)
                if gx is not None:
                    torch.add(gxc, g, out=gx[s:s + chunk])  # the LN branch + the residual
                if g_lnw is not None:
                    g_lnw += gw
                if g_lnb is not None:
                    g_lnb += gb
        return gx, g_lnw, g_lnb, gw1, gb1, gw2, gb2, None, None, None


class DGMN2Block(nn.Module):
    """A DGMN2 layer (pre-norm): ``x += DropPath(attn(LN(x)))``; ``x += DropPath(ffn(LN(x)))``.

    In eval mode without autograd (inference) the same sums are formed in place on the attention's fresh
    output, and LN + FFN run over chunks of tokens: the r * C hidden activations of a large map (274 MB for
    stage 1 at 800 x 1333) never exist at once. On CPU a chunk of ``chunk_tokens`` = 1024 tokens keeps them
    in cache (2-4 MB; 1024 was the fastest of 512-16384 at 800 x 1333), other devices take larger chunks
    (``chunk_tokens_accel``). The result is the same (every token goes through LN and FFN alone; ``a + b``
    is ``b + a`` in floating point).
    """
    chunk_tokens = 1024
    chunk_tokens_accel = 16384
    chunked_ffn_train = True  # LN + FFN + residual with autograd through _ChunkedNormFFNResidual ...
    chunked_ffn_min_bytes = 32 * 2 ** 20  # ... when the hidden map would be at least this large
    train_chunk_tokens = 2048

    def __init__(self, embed_dims: int, num_heads: int, mlp_ratio: float, feat_size: Tuple[int, int],
                 qkv_bias: bool = True, drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 relpos_mode: str = 'official', attn_impl: str = 'fast', with_cp: bool = False):
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = DGMN2Attention(embed_dims, num_heads, feat_size, qkv_bias, attn_drop, drop,
                                   relpos_mode, attn_impl)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.ffn = FFN(embed_dims, int(embed_dims * mlp_ratio), drop, onednn=attn_impl == 'fast')
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def _forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        if self.chunked_ffn_train and self._chunked_ffn_applies(x):
            B, N, C = x.shape
            n, f = self.norm2, self.ffn
            return _ChunkedNormFFNResidual.apply(x.reshape(B * N, C), n.weight, n.bias, f.fc1.weight, f.fc1.bias,
                                                 f.fc2.weight, f.fc2.bias, n.eps, self.train_chunk_tokens,
                                                 f.onednn and onednn_linear_applies(x, f.fc1.weight)).view(B, N, C)
        return x + self.drop_path(self.ffn(self.norm2(x)))

    def _chunked_ffn_applies(self, x: Tensor) -> bool:
        """Whether the chunked training form is used: for large maps only (hidden map >=
        ``chunked_ffn_min_bytes``; below, the extra fc1 GEMM costs more than the whole-map tensors, e.g.
        stage 3 at 800 x 1333: +15 %; stage 1: -25 %, 1 thread), and for the default block: no FFN dropout
        or drop path in training, exact GELU, LN with affine parameters, no autocast, no compile/export
        tracing, contiguous x."""
        f = self.ffn
        hidden_bytes = x.numel() // x.shape[-1] * f.fc1.out_features * x.element_size()
        return (hidden_bytes >= self.chunked_ffn_min_bytes
                and not (self.training and (f.drop.p > 0 or not isinstance(self.drop_path, nn.Identity)))
                and type(f) is FFN and isinstance(f.act, nn.GELU) and f.act.approximate == 'none'
                and f.fc1.bias is not None and f.fc2.bias is not None
                and self.norm2.weight is not None and self.norm2.bias is not None
                and not torch.is_autocast_enabled(x.device.type) and not torch.compiler.is_compiling()
                and not torch.jit.is_tracing()  # jit FLOP counters / TorchScript see the plain ops
                and x.is_contiguous() and x.dtype == self.norm2.weight.dtype)

    def _forward_inference(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        y = self.attn(self.norm1(x), hw_shape)
        y = (y.clone() if y.data_ptr() == x.data_ptr() else y.contiguous()).add_(x)  # x + attn(LN(x))
        chunk = self.chunk_tokens if y.device.type == 'cpu' else self.chunk_tokens_accel
        for c in y.view(-1, y.shape[-1]).split(chunk):  # B N rows, chunks are contiguous views
            c.add_(self.ffn(self.norm2(c)))  # y + ffn(LN(y)), in place, chunk by chunk
        return y

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
        if not (self.training or torch.is_grad_enabled() or torch.compiler.is_compiling()):
            return self._forward_inference(x, hw_shape)  # (compile / export trace the plain form)
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, hw_shape, use_reentrant=False)
        return self._forward(x, hw_shape)


# --------------------------------------------------------------------------------------------------------
# Patch embeddings and stages
# --------------------------------------------------------------------------------------------------------
def channels_last_(conv: nn.Conv2d) -> nn.Conv2d:
    """Store a conv's weight channels-last (NHWC), in place. With NHWC weights and inputs oneDNN runs the
    patch-embedding convs without reordering copies, their outputs stay NHWC, and a stage's (B, N, C)
    tokens are a view of its patch embedding's output instead of a transposed copy (the stage's output,
    a view of its (B, N, C) tokens, is NHWC again and feeds the next stage as is; the backbone returns
    NCHW-contiguous copies). Loading a state dict or ``.to()`` keep the layout."""
    conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    return conv


class ConvStem(nn.Module):
    """Stage-1 patch embedding: three 3x3 Conv-Norm-ReLU with strides 2, 1, 2 (total stride 4)."""

    def __init__(self, in_channels: int, embed_dims: int, norm_cfg: dict, act_cfg: dict):
        super().__init__()
        mid = embed_dims // 2
        for i, (cin, cout, s) in enumerate(((in_channels, mid, 2), (mid, mid, 1), (mid, embed_dims, 2)), 1):
            self.add_module(f'conv{i}', channels_last_(nn.Conv2d(cin, cout, 3, s, 1, bias=False)))
            self.add_module(f'norm{i}', build_norm_layer(norm_cfg, cout)[1])
        self.act = build_activation_layer(act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # see channels_last_
        x = self.act(self.norm1(self.conv1(x)))
        x = self.act(self.norm2(self.conv2(x)))
        return self.act(self.norm3(self.conv3(x)))


class PatchEmbed(nn.Module):
    """Stage 2-4 patch embedding: one 3x3 Conv-Norm-ReLU (stride 2, or 1 in the SETR mode)."""

    def __init__(self, in_channels: int, embed_dims: int, stride: int, norm_cfg: dict, act_cfg: dict):
        super().__init__()
        self.conv = channels_last_(nn.Conv2d(in_channels, embed_dims, 3, stride, 1, bias=False))
        self.norm = build_norm_layer(norm_cfg, embed_dims)[1]
        self.act = build_activation_layer(act_cfg)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.norm(self.conv(x)))


class DGMN2Stage(nn.Module):
    """A patch embedding followed by ``depth`` DGMN2 layers; maps (B, C_in, H, W) -> (B, C, H', W')."""

    def __init__(self, patch_embed: nn.Module, blocks: Sequence[DGMN2Block]):
        super().__init__()
        self.patch_embed = patch_embed
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, N, C), a view when x is channels-last
        for blk in self.blocks:
            x = blk(x, (H, W))
        return x.transpose(1, 2).reshape(B, C, H, W)


# --------------------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------------------
@MODELS.register_module()
class DGMN2(BaseModule):
    """DGMN2 backbone (TPAMI 2022), for mmpretrain, mmdet and mmseg.

    A pyramid of four stages with output strides 4, 8, 16, 32 (channels 64, 128, 320, 512); in the SETR
    mode (``strides=(4, 2, 1, 1)``) stages 3 and 4 stay at stride 8. No final norm: stage maps are
    returned as they leave their last block.

    Args:
        arch (str | dict): 'tiny', 'small', 'medium', 'large' (or 't', 's', 'm', 'l'), or a dict with keys
            ``depths``, ``embed_dims``, ``num_heads``, ``mlp_ratios``. Defaults to 'tiny'.
        in_channels (int): input channels. Defaults to 3.
        strides (Sequence[int]): stride of each stage's patch embedding; the stem's must be 4, the others
            1 or 2. Defaults to (4, 2, 2, 2); ``(4, 2, 1, 1)`` is the stride-8 mode of the SETR heads.
        out_indices (Sequence[int] | int): stages whose maps are returned (negative indices count from the
            end). Defaults to (0, 1, 2, 3).
        qkv_bias (bool): bias in qkv and in the walk predictor. Defaults to True.
        drop_rate (float): dropout after the attention projection and in the FFN. Defaults to 0.
        attn_drop_rate (float): dropout on the attention weights. Defaults to 0.
        drop_path_rate (float): stochastic depth, linear from 0 over all blocks. Defaults to 0.
        norm_cfg (dict): norm of the patch embeddings. Defaults to ``dict(type='BN')``.
        act_cfg (dict): activation of the patch embeddings. Defaults to ``dict(type='ReLU')``.
        relpos_mode (str): 'official' (default) or 'corrected', see :class:`RelPosEmb`.
        attn_impl (str): attention implementation, 'fast' or 'reference', see :class:`DGMN2Attention`;
            with 'fast' the blocks' FFNs also run their Linears through oneDNN on CPU (``FFN(onednn=True)``).
            Same parameters and results. Defaults to 'fast'.
        pretrain_img_size (int): image size the RelPos tables are made for (224 in every official task).
        frozen_stages (int): stages 0 .. frozen_stages-1 are frozen (parameters and BN statistics); one of
            -1, 0 (both: nothing frozen, -1 as in mmpretrain), 1, 2, 3, 4 (everything). Defaults to 0.
        norm_eval (bool): keep every BN in eval mode during training. Defaults to False.
        with_cp (bool): gradient checkpointing of each block. Defaults to False.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH, prefix=...)`` loads an
            official DGMN2 checkpoint or one converted by ``tools/model_converters/dgmn2_official_to_mm.py``
            (a full classifier; the backbone part is taken); keys that do not match raise an error.

    Shapes:
        input (B, in_channels, H, W) -> tuple of (B, C_i, H_i, W_i) with
        ``H_1 = ceil(H / 4)``-style conv arithmetic (``h -> (h - 1) // 2 + 1`` per stride-2 conv).
    """
    arch_zoo = {
        **dict.fromkeys(['t', 'tiny'], dict(depths=(2, 2, 2, 2))),
        **dict.fromkeys(['s', 'small'], dict(depths=(3, 4, 6, 3))),
        **dict.fromkeys(['m', 'medium'], dict(depths=(3, 4, 18, 3))),
        **dict.fromkeys(['l', 'large'], dict(depths=(3, 8, 27, 3))),
    }
    default_widths = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4))
    num_stages = 4

    def __init__(self,
                 arch='tiny',
                 in_channels: int = 3,
                 strides: Sequence[int] = (4, 2, 2, 2),
                 out_indices=(0, 1, 2, 3),
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU', inplace=True),
                 relpos_mode: str = 'official',
                 attn_impl: str = 'fast',
                 pretrain_img_size: int = 224,
                 frozen_stages: int = 0,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = self._parse_arch(arch)
        depths = self.arch_settings['depths']
        embed_dims = self.arch_settings['embed_dims']
        num_heads = self.arch_settings['num_heads']
        mlp_ratios = self.arch_settings['mlp_ratios']
        strides, out_indices = check_dgmn2_args(  # every argument, ValueError/TypeError naming it
            self.arch_settings, in_channels, strides, out_indices, qkv_bias, drop_rate, attn_drop_rate,
            drop_path_rate, norm_cfg, act_cfg, relpos_mode, attn_impl, DGMN2Attention.impls, pretrain_img_size,
            frozen_stages, norm_eval, with_cp, self.num_stages)
        self.in_channels = in_channels
        self.strides = strides
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.embed_dims = embed_dims

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        cur, prev = 0, in_channels
        for i in range(self.num_stages):
            if i == 0:
                patch_embed = ConvStem(in_channels, embed_dims[0], norm_cfg, act_cfg)
            else:
                patch_embed = PatchEmbed(prev, embed_dims[i], strides[i], norm_cfg, act_cfg)
            # the RelPos tables are sized for the stage's map at the pre-training resolution, stride 2^(i+2)
            fs = pretrain_img_size // (4 * 2 ** i)
            blocks = [
                DGMN2Block(embed_dims[i], num_heads[i], mlp_ratios[i], (fs, fs), qkv_bias, drop_rate,
                           attn_drop_rate, dpr[cur + j], relpos_mode, attn_impl, with_cp)
                for j in range(depths[i])
            ]
            self.stages.append(DGMN2Stage(patch_embed, blocks))
            cur += depths[i]
            prev = embed_dims[i]
        self.num_features = [embed_dims[i] for i in self.out_indices]
        self.apply(_init_weights)
        self._freeze_stages()

    @classmethod
    def _parse_arch(cls, arch) -> dict:
        return parse_arch(arch, cls.arch_zoo, ('depths', 'embed_dims', 'num_heads', 'mlp_ratios'), cls.num_stages,
                          defaults=cls.default_widths, positive_int_keys=('depths', 'embed_dims', 'num_heads'),
                          model='DGMN2')

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        # a clear error (naming the minimum size) instead of BatchNorm's on a too small map
        check_dgmn2_input(x, self.in_channels, self.strides, bn_train_stages(self.stages))
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)  # channels-last between stages (see channels_last_)
            if i in self.out_indices:
                # contiguous NCHW, as necks and ops downstream expect (mmcv's RoIAlign reads raw NCHW memory)
                outs.append(x.contiguous())
        return tuple(outs)

    # --- training-mode helpers -------------------------------------------------------------------------
    def _freeze_stages(self):
        for stage in self.stages[:max(self.frozen_stages, 0)]:
            stage.eval()
            for p in stage.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """Layer-wise depth of a parameter, for layer-wise lr decay (mmpretrain's
        ``LearningRateDecayOptimWrapperConstructor``, ``scale = rate ** (num_layers - depth - 1)``).

        With L = sum(depths) blocks, ``num_layers = L + 2``: the stem (``stages.0.patch_embed``) has depth 0,
        block j of stage i has depth ``sum(depths[:i]) + j + 1``, the patch embedding of stage i > 0 shares
        the depth of the stage's first block, and anything outside the backbone (a parameter whose name
        does not start with ``prefix``, e.g. the head) has depth L + 1.

        Args:
            param_name (str): the parameter's name, e.g. ``'backbone.stages.2.blocks.1.attn.qkv.weight'``.
            prefix (str): the backbone's prefix in ``param_name``. Defaults to ''.

        Returns:
            tuple[int, int]: (depth, num_layers).
        """
        depths = [len(stage.blocks) for stage in self.stages]
        num_layers = sum(depths) + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        parts = param_name[len(prefix):].split('.')
        if len(parts) < 3 or parts[0] != 'stages':
            return num_layers - 1, num_layers
        stage_id = int(parts[1])
        first = sum(depths[:stage_id]) + 1  # depth of the stage's first block
        if parts[2] == 'patch_embed':
            return (0 if stage_id == 0 else first), num_layers
        if parts[2] == 'blocks':
            return first + int(parts[3]), num_layers
        return num_layers - 1, num_layers

    # --- weights ---------------------------------------------------------------------------------------
    def init_weights(self):
        """Load ``init_cfg=dict(type='Pretrained', ...)`` strictly (official checkpoints of any kind, or
        converted ones); any other ``init_cfg`` is handled by mmengine. A file that cannot be used raises
        one :class:`~dgmn_mm.models.backbones.dgmn2_convert.CheckpointError` ``'<file>: <what is wrong>'``
        (local files are read with ``weights_only=True``)."""
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            return super().init_weights()
        ckpt_path = self.init_cfg.get('checkpoint')
        if ckpt_path is None:
            raise ValueError("init_cfg of type 'Pretrained' needs a 'checkpoint'")
        if '://' in str(ckpt_path):
            ckpt = CheckpointLoader.load_checkpoint(ckpt_path, map_location='cpu', logger='current')
        else:
            ckpt = load_checkpoint_file(ckpt_path)
        state_dict = checkpoint_filter_fn(ckpt, self, prefix=self.init_cfg.get('prefix'), source=ckpt_path)
        load_backbone_state_dict(self, state_dict, source=ckpt_path)
        MMLogger.get_current_instance().info(f'DGMN2: loaded {len(state_dict)} tensors from {ckpt_path}')
        self._is_init = True


def _init_weights(m: nn.Module):
    """As the official ``_init_weights`` (github fudan-zvg/DGMN2, ``classification/dgmn2.py``): every Linear trunc_normal(std=.02, bounds +-2) with zero bias; LayerNorm 1/0; convs,
    BN and the RelPos tables keep their construction-time init (the tables ``randn * d^-0.5``)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------------------------------------
# Official checkpoints: the conversion lives in dgmn2_convert (re-exported here for existing imports)
# --------------------------------------------------------------------------------------------------------
from .dgmn2_convert import (CheckpointError, checkpoint_filter_fn, convert_official_checkpoint,  # noqa: E402,F401
                            convert_official_state_dict, convert_to_official_state_dict, is_official_state_dict,
                            load_backbone_state_dict, load_checkpoint_file, unwrap_checkpoint)

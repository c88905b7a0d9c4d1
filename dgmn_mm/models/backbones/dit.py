"""DiT: the dynamic token routing Transformer backbone (our reconstruction).

"DiT: Efficient Vision Transformers with Dynamic Token Routing", Y. Ma, Z. Fei, J. Huang, arXiv 2308.03409.
No official code exists (the repository github ``Maycbj/DiT`` holds a README and figures), so this is a
reconstruction: every fact the paper states is kept, and every choice we had to make is marked **[R]** below
and is a constructor option (see ``docs/dit.md``).

The network is a grid of nodes F_{i,j} (row i = scale with stride 4 * 2^i, column j = stage; Sec. 3.1, Fig. 2).
A node holds a cell B_{i,j} of PVTv2 blocks of scale i and a per-token **row gate** G^row_{i,j} computed from
F_{i,j} (dynamic depth; only the routed tokens enter the cell), and a per-image **column gate** on the patch
embedding P_{i,j} that decides whether the whole map is downsampled to node (i+1, j) (dynamic scale). Eq. 4::

    F_{i,j} = B_{i,j-1}(G^row ⊙ F_{i,j-1}) + (1 - G^row) ⊙ F_{i,j-1} + G^col_{i-1,j} ⊙ P_{i-1,j}(F_{i-1,j})

Tokens with G^row = 0 are copied; at inference they are *not computed* (gather -> the node's blocks ->
scatter, :meth:`DiTNode.forward_sparse`), which gives exactly the masked dense result of training
(:meth:`DiTNode.forward_dense`). Every forward also counts the FLOPs each image used (Eq. 5) and returns them
with the maps (:class:`DiTOutputs`); the complexity constraint of Eqs. 6-7
(:class:`dgmn_mm.models.dit_models.DiTBudgetLoss`) turns them into a loss.

Module tree: ``stem_proj``/``stem_norm`` (F_{0,0}), ``nodes['i_j'].{gate, blocks[k].{norm1, attn, norm2, ffn}}``,
``embeds['i_j'].{gate, proj, norm}`` (P_{i,j}: node (i, j) -> node (i+1, j)), ``out_norms[i]``.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from torch import Tensor

from ...registry import MODELS
from ..utils.arch import normalize_out_indices, parse_arch

GATE_MODES = ('learned', 'static', 'open', 'random', 'attention')


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


# --------------------------------------------------------------------------------------------------------
# Routing gates (Sec. 3.2, Eq. 3 and the equation above Eq. 4)
# --------------------------------------------------------------------------------------------------------
class RoutingGate(nn.Module):
    """A binary routing gate: ``logits = x · w^T + b`` (2 classes: 0 = skip / identity, 1 = compute).

    - training: ``G = GumbelSoftmax(logits, tau, hard=True)[..., 1]`` (one-hot forward, soft backward: the
      straight-through estimator), ``P = softmax(logits)[..., 1]``;
    - inference: ``G = argmax`` of the logits made with the **momentum copy** (ŵ, b̂) of the weights,
      Eq. 3 ``ŵ <- m·ŵ + (1-m)·w``, updated by :meth:`momentum_update` (the backbone calls it once per
      training forward, see :class:`DiT`).

    The ablation modes (Tables 6-8) replace the learned decision, in training and at inference:

    - ``'open'``: G = 1 (Table 6 "Fully", and the fixed paths of Table 8);
    - ``'static'``: the gate keeps its initial weights (frozen, Table 6 "Static"); on a token map it routes
      the ``round(fixed_keep · N)`` tokens with the largest initial logit margin, so that the untrained
      gate still meets the budget; on a per-image input (column gates) it is the argmax of the frozen logits;
    - ``'random'``: G ~ Bernoulli(fixed_keep) per token / image (Table 7 "Random");
    - ``'attention'`` (token maps only, Table 7 "Attention"): the attention probability that the mean token
      (a global query, as a class token would) gives each token, ``softmax_n(x̄ · x_n / sqrt(C))`` on the
      normalised tokens; the ``round(fixed_keep · N)`` most attended tokens are routed.

    Args:
        in_dims (int): C of the gated tokens (or of the pooled map).
        norm (bool): [R] apply a non-affine LayerNorm to the input first (row gates: True).
        init_keep (float): [R] the bias is set so that ``softmax(b)[1] = init_keep`` (about 95% of the
            tokens are routed at the start of training). In (0, 1).
        momentum (float): m of Eq. 3, in [0, 1]. Defaults to 0.999.
        tau (float): Gumbel-Softmax temperature (> 0). Defaults to 1.
        mode (str): one of ``GATE_MODES``: 'learned' (the paper), 'static', 'open', 'random', 'attention'.
        fixed_keep (float): the keep rate of 'static', 'random' and 'attention', in [0, 1].

    Shapes:
        x (..., C) -> (G, P), each (...), G in {0, 1}. The top-k modes need x of shape (B, N, C).
    """

    def __init__(self, in_dims: int, norm: bool = True, init_keep: float = 0.95, momentum: float = 0.999,
                 tau: float = 1.0, mode: str = 'learned', fixed_keep: float = 0.5):
        super().__init__()
        if mode not in GATE_MODES:
            raise ValueError(f'gate mode must be one of {GATE_MODES}, got {mode!r}')
        if not 0. < init_keep < 1.:
            raise ValueError(f'init_keep must be in (0, 1), got {init_keep}')
        if not 0. <= momentum <= 1.:
            raise ValueError(f'momentum must be in [0, 1], got {momentum}')
        if not tau > 0.:
            raise ValueError(f'tau must be > 0, got {tau}')
        if not 0. <= fixed_keep <= 1.:
            raise ValueError(f'fixed_keep must be in [0, 1], got {fixed_keep}')
        self.in_dims, self.norm, self.init_keep = in_dims, norm, init_keep
        self.momentum, self.tau, self.mode, self.fixed_keep = momentum, tau, mode, fixed_keep
        self.fc = nn.Linear(in_dims, 2)
        self.register_buffer('weight_ema', torch.zeros(2, in_dims))
        self.register_buffer('bias_ema', torch.zeros(2))
        self.reset_parameters()
        if mode != 'learned':  # 'static' keeps its init; the other modes do not use the weights (and
            self.fc.requires_grad_(False)  # DDP must not wait for their gradients)

    @torch.no_grad()
    def reset_parameters(self):
        self.fc.weight.normal_(0., .02).clamp_(-2., 2.)  # = trunc_normal_(std=.02), see _init_weights
        logit = math.log(self.init_keep / (1. - self.init_keep))
        self.fc.bias.copy_(torch.tensor([-logit / 2, logit / 2]))
        self.weight_ema.copy_(self.fc.weight)
        self.bias_ema.copy_(self.fc.bias)

    @property
    def active(self) -> bool:
        """Whether the gate looks at the data (and costs FLOPs)."""
        return self.mode in ('learned', 'static', 'attention')

    @torch.no_grad()
    def momentum_update(self):
        """Eq. 3: ``ŵ <- m·ŵ + (1-m)·w`` (and the same for the bias)."""
        self.weight_ema.mul_(self.momentum).add_(self.fc.weight, alpha=1. - self.momentum)
        self.bias_ema.mul_(self.momentum).add_(self.fc.bias, alpha=1. - self.momentum)

    def logits(self, x: Tensor, use_momentum: bool) -> Tensor:
        if self.norm:
            x = F.layer_norm(x, (self.in_dims, ), eps=1e-6)
        if use_momentum:
            return F.linear(x, self.weight_ema, self.bias_ema)
        return F.linear(x, self.fc.weight, self.fc.bias)

    def _top_k(self, score: Tensor) -> Tensor:
        """Routes the ``round(fixed_keep · N)`` highest scores of each image. score: (B, N) -> (B, N)."""
        # a Python int even under jit tracing (where sizes are 0-dim tensors, which ``round`` refuses)
        k = int(round(float(self.fixed_keep) * int(score.shape[-1])))
        g = torch.zeros_like(score)
        if k > 0:
            g.scatter_(-1, score.topk(k, dim=-1).indices, 1.)
        return g

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        shape = x.shape[:-1]
        if self.mode == 'open':
            ones = x.new_ones(shape)
            return ones, ones
        if self.mode == 'random':  # training: the probability; inference: the drawn mask (hard gates)
            p = x.new_full(shape, self.fixed_keep)
            g = torch.bernoulli(p)
            return g, (p if self.training else g)
        if self.mode == 'attention':
            if x.dim() != 3:
                raise ValueError(f"gate mode 'attention' needs a token map (B, N, C), got {tuple(x.shape)}")
            xn = F.layer_norm(x, (self.in_dims, ), eps=1e-6)
            score = (xn @ xn.mean(1, keepdim=True).transpose(1, 2)).squeeze(-1) * self.in_dims ** -0.5
            g = self._top_k(score.softmax(-1))
            return g, g
        if self.mode == 'static':
            logits = self.logits(x, use_momentum=False)
            if x.dim() == 3:
                g = self._top_k(logits[..., 1] - logits[..., 0])
            else:
                g = (logits[..., 1] > logits[..., 0]).to(x.dtype)
            return g, g
        if self.training:
            logits = self.logits(x, use_momentum=False)
            g = F.gumbel_softmax(logits, tau=self.tau, hard=True)[..., 1]
            return g, logits.softmax(-1)[..., 1]
        logits = self.logits(x, use_momentum=True)
        g = (logits[..., 1] > logits[..., 0]).to(x.dtype)
        return g, g

    def flops(self, num_tokens: int) -> int:
        """Multiply-adds of the decision: the 2-way projection (learned, static) or the mean token and its
        dot products (attention)."""
        return num_tokens * self.in_dims * 2 if self.active else 0

    def extra_repr(self) -> str:
        return (f'mode={self.mode}, momentum={self.momentum}, tau={self.tau}, init_keep={self.init_keep}, '
                f'fixed_keep={self.fixed_keep}')


# --------------------------------------------------------------------------------------------------------
# PVTv2 block with masked / sparse compute
# --------------------------------------------------------------------------------------------------------
class SRAttention(nn.Module):
    """PVTv2 spatial-reduction attention: ``q = Linear(C, C)``, ``kv = Linear(C, 2C)`` on the tokens
    reduced by ``sr = Conv2d(C, C, R, R) + LN`` (R > 1), ``softmax(q k^T / sqrt(d)) v``, ``proj``.

    The keys/values come from all N tokens of the block's input; the queries can be any subset of them
    ([R]: skipped tokens still serve as keys/values), which is what makes the sparse path exact.
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0.):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}')
        self.embed_dims, self.num_heads, self.sr_ratio = embed_dims, num_heads, sr_ratio
        self.head_dims = embed_dims // num_heads
        self.scale = self.head_dims ** -0.5
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(embed_dims)

    def key_value(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
        """x: (B, N, C) normed tokens -> k, v: (B, h, N_k, d), N_k = N / R^2."""
        B, N, C = x.shape
        if self.sr_ratio > 1:
            x = self.sr(x.transpose(1, 2).reshape(B, C, *hw_shape)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        k, v = self.kv(x).reshape(B, -1, 2, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        return k, v

    def masked_key_value(self, xn: Tensor, hw_shape: Tuple[int, int],
                         mask: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Keys/values of the routed tokens only (per-node row gates). xn: (B, N, C) normed tokens, already
        zero at the skipped positions; mask: (B, N), > 0 = routed -> k, v: (B, h, N_k, d) and the key mask
        (B, N_k): with R > 1, the reduced positions whose R x R window holds at least one routed token."""
        B, N, C = xn.shape
        keep = mask.detach() > 0
        if self.sr_ratio > 1:
            R = self.sr_ratio
            kmask = F.max_pool2d(keep.to(xn.dtype).view(B, 1, *hw_shape), R, R).flatten(1) > 0
        else:
            kmask = keep
        k, v = self.key_value(xn, hw_shape)
        return k, v, kmask

    def attend(self, x: Tensor, k: Tensor, v: Tensor, key_mask: Optional[Tensor] = None) -> Tensor:
        """x: (B, M, C) normed query tokens (any M), key_mask: (B, N_k) bool or None -> (B, M, C). An image
        without any valid key gets a zero attention output."""
        B, M, C = x.shape
        q = self.q(x).reshape(B, M, self.num_heads, self.head_dims).transpose(1, 2)
        attn = q @ k.transpose(-2, -1) * self.scale
        if key_mask is not None:
            attn = attn.masked_fill(~key_mask[:, None, None, :], torch.finfo(attn.dtype).min)
        attn = self.attn_drop(attn.softmax(dim=-1))
        if key_mask is not None:
            attn = attn * key_mask.any(-1).to(attn.dtype).view(B, 1, 1, 1)
        out = (attn @ v).transpose(1, 2).reshape(B, M, C)
        return self.proj_drop(self.proj(out))

    def flops(self, hw_shape: Tuple[int, int]) -> Tuple[int, int]:
        """(FLOPs paid once per image for the keys/values, FLOPs per query token), multiply-adds."""
        H, W = hw_shape
        C, R = self.embed_dims, self.sr_ratio
        n_k = (H // R) * (W // R) if R > 1 else H * W
        fixed = n_k * C * 2 * C + (n_k * C * C * R * R if R > 1 else 0)
        per_token = 2 * C * C + 2 * n_k * C  # q, proj; q k^T, attn v
        return fixed, per_token


class DWConvFFN(nn.Module):
    """PVTv2 FFN: ``fc1 (C -> rC) -> depth-wise 3x3 conv -> GELU -> fc2``.

    [R] with a token mask, the hidden activations of skipped tokens are zeroed before the depth-wise conv,
    so the routed tokens see the same neighbourhood in the dense and the sparse computation.

    Args:
        sparse_dwconv (str): how the sparse path evaluates the depth-wise conv at the routed positions:
            'map' (default): scatter the routed hidden activations into a zero map, run the (fast) dense
            depth-wise conv, read the routed positions back; the conv is evaluated at skipped positions too
            (9 rC multiply-adds per skipped token, 3-7% of a block's per-token FLOPs) and that is counted.
            'gather': sum the 3x3 neighbours of the routed positions only (no FLOP at a skipped token, but
            slower on CPU: nine row gathers instead of one conv kernel). Both give the same result.
    """

    def __init__(self, embed_dims: int, hidden_dims: int, drop: float = 0., sparse_dwconv: str = 'map'):
        super().__init__()
        if sparse_dwconv not in ('map', 'gather'):
            raise ValueError(f"sparse_dwconv must be 'map' or 'gather', got {sparse_dwconv!r}")
        self.embed_dims, self.hidden_dims, self.sparse_dwconv = embed_dims, hidden_dims, sparse_dwconv
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, 3, 1, 1, groups=hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int], mask: Optional[Tensor] = None) -> Tensor:
        """Dense. x: (B, N, C), mask: (B, N) or None -> (B, N, C)."""
        B, N, _ = x.shape
        h = self.fc1(x)
        if mask is not None:
            h = h * mask.unsqueeze(-1)
        h = self.dwconv(h.transpose(1, 2).reshape(B, self.hidden_dims, *hw_shape)).flatten(2).transpose(1, 2)
        return self.drop(self.fc2(self.drop(self.act(h))))

    def forward_sparse(self, x: Tensor, rows: Tensor, num_images: int, hw_shape: Tuple[int, int]) -> Tensor:
        """Only the T routed tokens. x: (T, C) routed tokens, rows: (T, ) their row ``b * N + n`` in the
        (num_images * N) token table -> (T, C)."""
        H, W = hw_shape
        Hd, N = self.hidden_dims, H * W
        h = self.fc1(x)
        if self.sparse_dwconv == 'map':
            hmap = h.new_zeros(num_images * N, Hd).index_copy_(0, rows, h)
            hmap = hmap.view(num_images, H, W, Hd).permute(0, 3, 1, 2)
            out = self.dwconv(hmap).permute(0, 2, 3, 1).reshape(num_images * N, Hd).index_select(0, rows)
        else:
            # zero-padded (H + 2) x (W + 2) maps, routed rows written at their padded positions
            b, n = rows // N, rows % N
            pos = b * ((H + 2) * (W + 2)) + (n // W + 1) * (W + 2) + (n % W + 1)
            hmap = h.new_zeros(num_images * (H + 2) * (W + 2), Hd).index_copy_(0, pos, h)
            weight = self.dwconv.weight.view(Hd, 9)
            out = self.dwconv.bias.expand(x.shape[0], Hd) if self.dwconv.bias is not None else 0.
            for k in range(9):
                out = out + hmap.index_select(0, pos + (k // 3 - 1) * (W + 2) + (k % 3 - 1)) * weight[:, k]
        return self.drop(self.fc2(self.drop(self.act(out))))

    def flops(self, hw_shape: Tuple[int, int]) -> Tuple[int, int]:
        """(FLOPs per image, FLOPs per routed token) of the sparse path."""
        dw = 9 * self.hidden_dims
        per_token = 2 * self.embed_dims * self.hidden_dims
        if self.sparse_dwconv == 'map':
            return hw_shape[0] * hw_shape[1] * dw, per_token
        return 0, per_token + dw


class DiTBlock(nn.Module):
    """A PVTv2 block (pre-norm, LN eps 1e-6) that computes only routed tokens.

    With per-node row gates (the default) the node's gate G decides for all its blocks:
    :meth:`forward_masked` (training) and :meth:`forward_tokens` (inference, routed tokens only) make the
    skipped tokens neither queries nor keys/values. With per-block gates (``with_gate=True``) the block has its
    own gate and the masked dense form (Eq. 4's row term for one block) is::

        y = x + DropPath(Attn(LN1 x));  y = y + DropPath(FFN(LN2 y; G))
        out = G ⊙ y + (1 - G) ⊙ x

    where skipped tokens still serve as keys/values; :meth:`forward_sparse` computes ``y`` only for the
    tokens with G = 1 and gives the same ``out``.

    Args:
        embed_dims, num_heads, sr_ratio, mlp_ratio: the PVTv2 hyper-parameters of the scale.
        gate_cfg (dict): kwargs of :class:`RoutingGate`.
        sparse_dwconv (str): see :class:`DWConvFFN`.
        with_gate (bool): give the block its own row gate (per-block gates); False with per-node gates,
            where the node's gate decides for all its blocks (:meth:`forward_masked`, :meth:`forward_tokens`).
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int, mlp_ratio: float, qkv_bias: bool = True,
                 drop: float = 0., attn_drop: float = 0., drop_path: float = 0., gate_cfg: Optional[dict] = None,
                 sparse_dwconv: str = 'map', with_gate: bool = True):
        super().__init__()
        self.gate = RoutingGate(embed_dims, norm=True, **(gate_cfg or {})) if with_gate else None
        self.norm1 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.attn = SRAttention(embed_dims, num_heads, sr_ratio, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(embed_dims, eps=1e-6)
        self.ffn = DWConvFFN(embed_dims, int(embed_dims * mlp_ratio), drop, sparse_dwconv)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward_dense(self, x: Tensor, hw_shape: Tuple[int, int], g: Optional[Tensor]) -> Tensor:
        """x: (B, N, C), g: (B, N) in {0, 1} (may carry straight-through gradients) or None (all routed)
        -> (B, N, C)."""
        xn = self.norm1(x)
        k, v = self.attn.key_value(xn, hw_shape)
        y = x + self.drop_path(self.attn.attend(xn, k, v))
        y = y + self.drop_path(self.ffn(self.norm2(y), hw_shape, g))
        if g is None:
            return y
        g = g.unsqueeze(-1)
        return g * y + (1. - g) * x

    def forward_sparse(self, x: Tensor, hw_shape: Tuple[int, int], g: Tensor) -> Tensor:
        """Inference: gather the routed tokens, compute them, scatter them back. Images without a routed
        token are not touched at all (not even their keys/values). x: (B, N, C), g: (B, N) -> (B, N, C)."""
        keep = g > 0
        counts = keep.sum(1)
        active = (counts > 0).nonzero().squeeze(1)
        if active.numel() == 0:
            return x
        B, N, C = x.shape
        if active.numel() == B and bool((counts == N).all()):
            return self.forward_dense(x, hw_shape, None)  # nothing to skip
        xa, keep = x[active], keep[active]
        Ba = xa.shape[0]
        rows = keep.flatten().nonzero().squeeze(1)  # (T, ): routed rows of the (Ba * N, C) token table
        xr = xa.reshape(Ba * N, C).index_select(0, rows)
        k, v = self.attn.key_value(self.norm1(xa), hw_shape)
        # attention needs the queries grouped per image: pad them to (Ba, M, C)
        counts = keep.sum(1)
        M = int(counts.max())
        slot = torch.arange(M, device=x.device)[None] < counts[:, None]  # (Ba, M)
        q_in = xr.new_zeros(Ba, M, C)
        q_in[slot] = self.norm1(xr)
        yr = xr + self.attn.attend(q_in, k, v)[slot]
        yr = yr + self.ffn.forward_sparse(self.norm2(yr), rows, Ba, hw_shape)
        out_a = xa.reshape(Ba * N, C).index_copy(0, rows, yr).view(Ba, N, C)
        if Ba == B:
            return out_a
        out = x.clone()
        out[active] = out_a
        return out

    # --- per-node row gates (the default): only the routed tokens enter the node's blocks ----------------
    def forward_masked(self, x: Tensor, hw_shape: Tuple[int, int], m: Tensor) -> Tensor:
        """Masked dense form of a block of a node whose row gate is ``m`` (training, and the reference of
        :meth:`forward_tokens`): the skipped tokens are zero after ``norm1`` (so they add nothing to the
        spatial reduction), are no keys (key mask), and their FFN hidden activations are zero before the
        depth-wise conv. x: (B, N, C), m: (B, N) in {0, 1} -> (B, N, C); the values at skipped positions
        are meaningless (the node puts the input back there)."""
        xn = self.norm1(x) * m.unsqueeze(-1)
        k, v, kmask = self.attn.masked_key_value(xn, hw_shape, m)
        y = x + self.drop_path(self.attn.attend(xn, k, v, kmask))
        return y + self.drop_path(self.ffn(self.norm2(y), hw_shape, m))

    def forward_tokens(self, xr: Tensor, ctx: 'RoutedTokens') -> Tensor:
        """Sparse form: only the T routed tokens of a node, xr: (T, C) -> (T, C) (= :meth:`forward_masked`
        at the routed positions). The spatial reduction (Conv R x R, stride R) is evaluated as R^2 linear maps,
        one per position in the window, on the routed tokens only, summed into their windows."""
        xn = self.norm1(xr)
        attn = self.attn
        if attn.sr_ratio > 1:
            C = xn.shape[1]
            w = attn.sr.weight.flatten(2)  # (C_out, C_in, R*R)
            red = xn.new_zeros(ctx.num_windows, C)
            xs = xn.index_select(0, ctx.sr_order).split(ctx.sr_sizes)
            for xo, o in zip(xs, ctx.sr_offsets):
                red = red.index_add(0, ctx.sr_windows[o], (xo @ w[:, :, o].t()).to(red.dtype))  # autocast
            red = red.index_select(0, ctx.win_rows)
            if attn.sr.bias is not None:
                red = red + attn.sr.bias
            kv_in = attn.norm(red)
        else:
            kv_in = xn
        kv = attn.kv(kv_in)
        kv = ctx.pad(kv, keys=True).reshape(ctx.num_images, -1, 2, attn.num_heads, attn.head_dims)
        k, v = kv.permute(2, 0, 3, 1, 4)
        out = attn.attend(ctx.pad(xn), k, v, ctx.key_slot)[ctx.slot]
        y = xr + out
        return y + self.ffn.forward_sparse(self.norm2(y), ctx.rows, ctx.num_images, ctx.hw_shape)

    def dense_flops(self, hw_shape: Tuple[int, int]) -> int:
        """C^row of one block (Eq. 5): every token routed, without the gate."""
        fixed, per_token = self.flops(hw_shape)
        return fixed + hw_shape[0] * hw_shape[1] * per_token

    def flops(self, hw_shape: Tuple[int, int]) -> Tuple[int, int]:
        """(FLOPs per image paid when any token is routed, FLOPs per routed token)."""
        a_fixed, a_tok = self.attn.flops(hw_shape)
        f_fixed, f_tok = self.ffn.flops(hw_shape)
        return a_fixed + f_fixed, a_tok + f_tok


class GatedPatchEmbed(nn.Module):
    """P_{i,j}: overlapping patch embedding (Conv 3x3, stride 2, bias; LN) with the per-image column gate
    ``P^col = Softmax(mean_tokens(F_{i,j}) · w^col)``, ``G^col = GumbelSoftmax(P^col)``."""

    def __init__(self, in_dims: int, embed_dims: int, gate_cfg: Optional[dict] = None):
        super().__init__()
        self.in_dims, self.embed_dims = in_dims, embed_dims
        self.gate = RoutingGate(in_dims, norm=False, **(gate_cfg or {}))
        self.proj = nn.Conv2d(in_dims, embed_dims, 3, 2, 1)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x: Tensor, hw_shape: Tuple[int, int]) -> Tuple[Tensor, Tuple[int, int]]:
        """x: (B, N, C_in) -> (B, N', C), (H', W')."""
        B, N, C = x.shape
        x = self.proj(x.transpose(1, 2).reshape(B, C, *hw_shape))
        hw = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), (hw[0], hw[1])

    def flops(self, hw_shape: Tuple[int, int]) -> int:
        H, W = (_conv_out(s, 3, 2, 1) for s in hw_shape)
        return H * W * self.in_dims * self.embed_dims * 9

    def gate_flops(self, hw_shape: Tuple[int, int]) -> int:
        return hw_shape[0] * hw_shape[1] * self.in_dims + self.gate.flops(1) if self.gate.active else 0


class RoutedTokens:
    """Index tables of one node's routed tokens (per-node row gates, sparse inference), shared by its blocks.

    Args:
        keep (Tensor): (B, N) bool, the routed tokens of the images that have any.
        hw_shape (tuple): (H, W) of the node's map.
        sr_ratio (int): R of the node's spatial-reduction attention.

    Attributes: ``rows`` (T, ) rows ``b * N + n`` of the routed tokens; ``slot`` (B, M) bool, where the
    queries of image b sit in a padded (B, M, C) batch; with R > 1, ``win_rows`` the non-empty windows,
    ``key_slot`` (B, K) their padded layout, and the tokens grouped by their position in the window.
    """

    def __init__(self, keep: Tensor, hw_shape: Tuple[int, int], sr_ratio: int):
        B, N = keep.shape
        H, W = hw_shape
        self.num_images, self.hw_shape = B, hw_shape
        self.rows = keep.flatten().nonzero().squeeze(1)
        self.slot = self._slots(keep.sum(1))
        if sr_ratio > 1:
            R = sr_ratio
            h, w = H // R, W // R
            b, n = self.rows // N, self.rows % N
            y, x = n // W, n % W
            inside = (y < h * R) & (x < w * R)  # the conv drops the last H % R rows / W % R columns
            win = b * (h * w) + (y // R) * w + (x // R)
            off = (y % R) * R + (x % R)
            off = torch.where(inside, off, torch.full_like(off, -1))
            order = torch.argsort(off, stable=True)
            order = order[off[order] >= 0]
            offs, sizes = torch.unique_consecutive(off[order], return_counts=True)
            self.sr_order, self.sr_sizes = order, sizes.tolist()
            self.sr_offsets = offs.tolist()
            self.sr_windows = dict(zip(self.sr_offsets, win[order].split(self.sr_sizes)))
            self.num_windows = B * h * w
            occupied = torch.zeros(B * h * w, dtype=torch.bool, device=keep.device)
            occupied[win[inside]] = True
            self.win_rows = occupied.nonzero().squeeze(1)
            self.key_slot = self._slots(occupied.view(B, h * w).sum(1))
        else:
            self.key_slot = self.slot

    @staticmethod
    def _slots(counts: Tensor) -> Tensor:
        M = int(counts.max()) if counts.numel() else 0
        return torch.arange(M, device=counts.device)[None] < counts[:, None]

    def pad(self, t: Tensor, keys: bool = False) -> Tensor:
        """(T, C) rows -> (B, M, C) zero-padded per image (keys: the (K_total, C) key rows)."""
        slot = self.key_slot if keys else self.slot
        out = t.new_zeros(*slot.shape, t.shape[-1])
        out[slot] = t
        return out


class DiTNode(nn.Module):
    """Node (i, j): a cell B_{i,j} of PVTv2 blocks of scale i and, with per-node row gates (the default),
    the row gate G^row_{i,j} computed from the node's input F_{i,j} (Eq. 4, Fig. 2).

    Args:
        blocks (Sequence[DiTBlock]): the cell.
        gate (RoutingGate, optional): the node's row gate (None with per-block gates).
    """

    def __init__(self, blocks: Sequence[DiTBlock], gate: Optional[RoutingGate] = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.gate = gate

    def forward_dense(self, f: Tensor, hw_shape: Tuple[int, int], g: Tensor) -> Tensor:
        """Eq. 4's row term, masked dense: ``G ⊙ B(G ⊙ F) + (1 - G) ⊙ F``. f: (B, N, C), g: (B, N) -> (B, N, C)."""
        y = f
        for blk in self.blocks:
            y = blk.forward_masked(y, hw_shape, g)
        g = g.unsqueeze(-1)
        return g * y + (1. - g) * f

    def forward_sparse(self, f: Tensor, hw_shape: Tuple[int, int], g: Tensor) -> Tensor:
        """The same with only the routed tokens computed (gather, the node's blocks, scatter)."""
        keep = g > 0
        B, N, C = f.shape
        if bool(keep.all()):
            for blk in self.blocks:
                f = blk.forward_dense(f, hw_shape, None)
            return f
        active = keep.any(1).nonzero().squeeze(1)
        if active.numel() == 0 or len(self.blocks) == 0:
            return f
        fa = f.index_select(0, active)
        ctx = RoutedTokens(keep.index_select(0, active), hw_shape, self.blocks[0].attn.sr_ratio)
        xr = fa.reshape(-1, C).index_select(0, ctx.rows)
        for blk in self.blocks:
            xr = blk.forward_tokens(xr, ctx)
        out = f.clone()
        out[active] = fa.reshape(-1, C).index_copy(0, ctx.rows, xr.to(fa.dtype)).view(-1, N, C)
        return out

    def row_flops(self, hw_shape: Tuple[int, int]) -> int:
        """C^row_{i,j} of Eq. 5: the cell with every token routed."""
        return sum(blk.dense_flops(hw_shape) for blk in self.blocks)


# --------------------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------------------
class DiTOutputs(tuple):
    """The backbone's output: a tuple of the requested maps (what FPNs and ``GlobalAveragePooling`` take) that
    also carries what the forward measured, for the budget loss and the tools.

    Attributes:
        complexity (dict): ``flops`` (B, ) the FLOPs (multiply-adds) each image used (Eq. 5; soft gate
            probabilities in training, hard gates at inference), ``dense_flops`` (all gates open),
            ``pvtv2_flops`` (the PVTv2 baseline of the same widths, or None for a custom arch).
        routing (dict): ``row[(i, j)]`` (B, D, N) row gates of node (i, j) (D = 1 with per-node gates, the
            number of blocks with per-block gates), ``col[(i, j)]`` (B, ) column gates, ``alive[(i, j)]`` (B, )
            whether the node received anything, ``shapes[i]`` (H_i, W_i), ``img_shape``.
    """

    def __new__(cls, maps: Sequence[Tensor], complexity: Dict[str, object], routing: Dict[str, object]):
        obj = super().__new__(cls, maps)
        obj.complexity, obj.routing = complexity, routing
        return obj


@MODELS.register_module()
class DiT(BaseModule):
    """DiT backbone (arXiv 2308.03409), our reconstruction, for mmpretrain, mmdet and mmseg.

    The routing space (Sec. 3.1, Fig. 2) is a grid of nodes (i, j), i = scale (strides 4, 8, 16, 32; dims
    64/128/320/512), j = column (stage). [R] We keep the nodes on the band ``|i - j| <= band`` of a 4-column
    grid (``band=1``: the 10 nodes (0,0), (0,1), (1,0), (1,1), (1,2), (2,1), (2,2), (2,3), (3,2), (3,3)): these
    are exactly the cells of the paper's routing visualisation (Fig. 3: strides 8/16/32 x stages 1-4) that
    show tokens, and the full grid (``band=None``) cannot meet DiT-B1's 30.3 M parameters of Table 1 (its 12
    patch embeddings and 16 one-block cells alone hold 31.3 M). Each node is a cell of ``depths[i]`` PVTv2
    blocks of scale i. The stem (Conv 7x7 s4 + LN) gives F_{0,0}; patch embeddings P_{i,j} (Conv 3x3 s2 + LN)
    link node (i, j) to (i+1, j) when both exist. Nodes are evaluated column by column with Eq. 4 (terms
    whose source node does not exist are dropped).

    Gates (all :class:`RoutingGate`):

    - row gates (dynamic depth, per token): by default one per node, ``G^row_{i,j}`` computed from the node's
      input F_{i,j} (Eq. 4, Fig. 2): only the routed tokens enter the node's blocks (the skipped ones are
      neither queries nor keys/values) and Eq. 5 charges ``mean(G^row_{i,j}) · C^row_{i,j}`` for the whole
      cell. ``row_gate_granularity='block'`` gives every block its own gate instead (skipped tokens of a
      block stay its keys/values); ``LN(x) -> Linear(C, 2)`` [R], Gumbel-Softmax (hard, straight-through) in
      training, argmax with the momentum weights at inference (Eq. 3);
    - column gates (dynamic scale), one per patch embedding, per image, on the mean token of F_{i,j}.

    [R] *Dead nodes*: a node that receives nothing for an image (all its incoming paths are closed or
    come from dead nodes) holds F = 0; with ``skip_dead_nodes`` its row gates are forced to 0 for that image
    (nothing is computed, its zero map is passed on) and its patch embedding is not applied.

    Momentum update (Eq. 3): [R] every training-mode forward first applies ``ŵ <- m·ŵ + (1-m)·w`` to every
    gate (``momentum_in_forward=True``), i.e. once per optimiser step, with the weights the previous step
    produced. Set it to False to call :meth:`momentum_update` yourself (e.g. with gradient accumulation).

    Complexity (Eq. 5): the forward returns a :class:`DiTOutputs` whose ``complexity['flops']`` are the FLOPs
    (multiply-adds) each image used: ``sum over nodes (mean(G^row) · C^row + C^gate) + sum over embeddings
    (G^col · C^col + C^gate) + C^stem`` (per-block gates: C^row of each block split into C^kv, paid once per
    image when any token is routed, and mean(G) · C^tok). In training the means use the soft gate
    probabilities (differentiable), at inference the hard gates (what the sparse inference computes). The
    budget loss of Eqs. 6-7 lives in the model wrappers (:mod:`dgmn_mm.models.dit_models`).

    Args:
        arch (str | dict): 'b1' ... 'b5', or a dict with ``depths`` (blocks per node of each row),
            ``embed_dims``, ``num_heads``, ``sr_ratios``, ``mlp_ratios`` (4 values each).
        in_channels (int): input channels. Defaults to 3.
        band (int | None): [R] nodes (i, j) with ``|i - j| <= band``; None = the full grid. Defaults to 1.
        num_columns (int): columns of the grid (L + 1 of Fig. 2). Defaults to 4.
        out_indices (Sequence[int] | int): rows (scales) whose maps are returned. Defaults to (0, 1, 2, 3).
        qkv_bias (bool): Defaults to True.
        drop_rate, attn_drop_rate (float): dropouts, in [0, 1).
        drop_path_rate (float): stochastic depth, linear from 0 over all blocks in evaluation order.
        row_gate (str): mode of the row gates (see :class:`RoutingGate`): 'learned' (default), 'static',
            'open', 'random', 'attention'. Depth-only (Table 8): ``col_gate='open'``; scale-only:
            ``row_gate='open'``.
        col_gate (str): mode of the column gates: 'learned' (default), 'static', 'open', 'random'.
        row_gate_granularity (str): 'node' (default: one row gate per node, Eq. 4-5) or 'block'.
        gate_momentum (float): m of Eq. 3. Defaults to 0.999 [R].
        gate_tau (float): Gumbel-Softmax temperature. Defaults to 1.
        row_init_keep, col_init_keep (float): [R] initial routing probability. Defaults to 0.95.
        fixed_keep (float): keep rate of the 'static', 'random' and 'attention' gates. Defaults to 0.5.
        momentum_in_forward (bool): see above. Defaults to True.
        skip_dead_nodes (bool): see above. Defaults to True.
        sparse_inference (bool): eval-mode forward skips tokens (gather/compute/scatter) instead of
            computing the masked dense form. Same result. Defaults to True.
        sparse_dwconv (str): 'gather' (default) or 'map', see :class:`DWConvFFN`.
        init_cfg (dict, optional): mmengine init config (e.g. ``Pretrained`` with ``prefix='backbone.'``).

    Shapes:
        input (B, in_channels, H, W), H, W >= :attr:`min_input_size` -> :class:`DiTOutputs` of (B, C_i, H_i,
        W_i) for ``i in out_indices``, with ``H_0 = (H - 1) // 4 + 1`` and ``H_{i+1} = (H_i - 1) // 2 + 1``;
        each map is the LayerNorm (eps 1e-6) of the last node of row i [R].
    """
    arch_zoo = {
        # [R] blocks per node of rows 0..3 (rows have 2, 3, 3, 2 nodes), fitted to both the parameters of
        # Table 1 (with a 1000-class head: 30.29 / 55.67 / 86.12 / 126.04 / 157.46 M) and the all-open
        # FLOPs of Table 6 (DiT-B2 "Fully" 15.6 G: ours 15.57 G); the other sizes take the B2 budget ratio
        # mu = 3.8 / 15.6 where the parameters allow it (see docs/dit.md).
        'b1': dict(depths=(6, 3, 2, 1), mlp_ratios=(8, 8, 4, 4)),
        'b2': dict(depths=(8, 10, 3, 2), mlp_ratios=(8, 8, 4, 4)),
        'b3': dict(depths=(14, 21, 3, 3), mlp_ratios=(8, 8, 4, 4)),
        'b4': dict(depths=(22, 25, 11, 1), mlp_ratios=(8, 8, 4, 4)),
        'b5': dict(depths=(30, 30, 16, 2), mlp_ratios=(4, 4, 4, 4)),
    }
    # PVTv2 baselines (the same widths, one chain of stages) for C^base of Eq. 6
    pvtv2_depths = {'b1': (2, 2, 2, 2), 'b2': (3, 4, 6, 3), 'b3': (3, 4, 18, 3), 'b4': (3, 8, 27, 3),
                    'b5': (3, 6, 40, 3)}
    default_widths = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), sr_ratios=(8, 4, 2, 1))
    num_rows = 4

    def __init__(self,
                 arch='b1',
                 in_channels: int = 3,
                 band: Optional[int] = 1,
                 num_columns: int = 4,
                 out_indices=(0, 1, 2, 3),
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 row_gate: str = 'learned',
                 col_gate: str = 'learned',
                 row_gate_granularity: str = 'node',
                 gate_momentum: float = 0.999,
                 gate_tau: float = 1.0,
                 row_init_keep: float = 0.95,
                 col_init_keep: float = 0.95,
                 fixed_keep: float = 0.5,
                 momentum_in_forward: bool = True,
                 skip_dead_nodes: bool = True,
                 sparse_inference: bool = True,
                 sparse_dwconv: str = 'gather',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        _check_int('in_channels', in_channels, 1)
        _check_int('num_columns', num_columns, 1)
        if band is not None:
            _check_int('band', band, 0)
        for name, value in (('drop_rate', drop_rate), ('attn_drop_rate', attn_drop_rate),
                            ('drop_path_rate', drop_path_rate)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0. <= value < 1.:
                raise ValueError(f'{name} must be a number in [0, 1), got {value!r}')
        if row_gate not in GATE_MODES:
            raise ValueError(f'row_gate must be one of {GATE_MODES}, got {row_gate!r}')
        col_modes = tuple(m for m in GATE_MODES if m != 'attention')
        if col_gate not in col_modes:
            raise ValueError(f'col_gate must be one of {col_modes} (a column gate decides for a whole map), '
                             f'got {col_gate!r}')
        if row_gate_granularity not in ('node', 'block'):
            raise ValueError(f"row_gate_granularity must be 'node' or 'block', got {row_gate_granularity!r}")
        if row_gate_granularity == 'block' and row_gate in ('static', 'attention'):
            raise ValueError(f"row_gate={row_gate!r} needs row_gate_granularity='node'")
        if sparse_dwconv not in ('map', 'gather'):
            raise ValueError(f"sparse_dwconv must be 'map' or 'gather', got {sparse_dwconv!r}")
        for name, value in (('qkv_bias', qkv_bias), ('momentum_in_forward', momentum_in_forward),
                            ('skip_dead_nodes', skip_dead_nodes), ('sparse_inference', sparse_inference)):
            if not isinstance(value, bool):
                raise TypeError(f'{name} must be a bool, got {value!r}')
        self.arch_name = arch.lower() if isinstance(arch, str) else None
        self.arch_settings = self._parse_arch(arch)
        s = self.arch_settings
        dims, depths = s['embed_dims'], s['depths']
        out_indices = normalize_out_indices(out_indices, self.num_rows, sort=False)  # the given order is kept
        self.out_indices = out_indices
        self.embed_dims = dims
        self.band, self.num_columns = band, num_columns
        self.row_gate_granularity = row_gate_granularity
        self.momentum_in_forward = momentum_in_forward
        self.skip_dead_nodes = skip_dead_nodes
        self.sparse_inference = sparse_inference

        self.node_ids: List[Tuple[int, int]] = [(i, j) for j in range(num_columns) for i in range(self.num_rows)
                                                if band is None or abs(i - j) <= band]
        ids = set(self.node_ids)
        if any(not any(n[0] == i for n in self.node_ids) for i in range(self.num_rows)):
            raise ValueError(f'band={band} with num_columns={num_columns} leaves a row without nodes')
        for (i, j) in self.node_ids:
            if (i, j) != (0, 0) and (i, j - 1) not in ids and (i - 1, j) not in ids:
                raise ValueError(f'band={band} with num_columns={num_columns} leaves node ({i}, {j}) unreachable')
        self.edge_ids = [(i, j) for (i, j) in self.node_ids if (i + 1, j) in ids]
        self.last_node = {i: max(j for (r, j) in self.node_ids if r == i) for i in range(self.num_rows)}

        row_cfg = dict(mode=row_gate, momentum=gate_momentum, tau=gate_tau, init_keep=row_init_keep,
                       fixed_keep=fixed_keep)
        col_cfg = dict(mode=col_gate, momentum=gate_momentum, tau=gate_tau, init_keep=col_init_keep,
                       fixed_keep=fixed_keep)
        per_node = row_gate_granularity == 'node'
        self.stem_proj = nn.Conv2d(in_channels, dims[0], 7, 4, 3)
        self.stem_norm = nn.LayerNorm(dims[0])
        total = sum(depths[i] for (i, _) in self.node_ids)
        dpr = iter([drop_path_rate * k / max(total - 1, 1) for k in range(total)])  # = torch.linspace
        self.nodes = nn.ModuleDict()
        self.embeds = nn.ModuleDict()
        for (i, j) in self.node_ids:
            self.nodes[f'{i}_{j}'] = DiTNode([
                DiTBlock(dims[i], s['num_heads'][i], s['sr_ratios'][i], s['mlp_ratios'][i], qkv_bias, drop_rate,
                         attn_drop_rate, next(dpr), row_cfg, sparse_dwconv, with_gate=not per_node)
                for _ in range(depths[i])
            ], RoutingGate(dims[i], norm=True, **row_cfg) if per_node else None)
            if (i, j) in self.edge_ids:
                self.embeds[f'{i}_{j}'] = GatedPatchEmbed(dims[i], dims[i + 1], col_cfg)
        self.out_norms = nn.ModuleList(nn.LayerNorm(dims[i], eps=1e-6) for i in range(self.num_rows))
        self.num_features = [dims[i] for i in self.out_indices]
        self.min_input_size = self._min_input_size()
        self.apply(_init_weights)
        for m in self.modules():
            if isinstance(m, RoutingGate):
                m.reset_parameters()

    @classmethod
    def _parse_arch(cls, arch) -> dict:
        out = parse_arch(arch, cls.arch_zoo, ('depths', 'embed_dims', 'num_heads', 'sr_ratios', 'mlp_ratios'),
                         cls.num_rows, defaults=cls.default_widths,
                         positive_int_keys=('embed_dims', 'num_heads', 'sr_ratios'), model='DiT')
        for v in out['depths']:  # a node may have no block
            _check_int("arch['depths']", v, 0)
        return out

    def _min_input_size(self) -> int:
        """The smallest H (and W) for which every row's map is at least its spatial-reduction kernel."""
        rows = {i for (i, _) in self.node_ids}
        for size in range(1, 4096):
            shapes = self.row_shapes((size, size))
            if all(shapes[i][0] >= max(self.arch_settings['sr_ratios'][i], 1) for i in rows):
                return size
        raise ValueError('no input size fits the sr_ratios')  # pragma: no cover

    # --- gates -----------------------------------------------------------------------------------------
    def gates(self) -> List[RoutingGate]:
        return [m for m in self.modules() if isinstance(m, RoutingGate)]

    def row_gates(self) -> List[RoutingGate]:
        """The row gates (one per node, or one per block)."""
        if self.row_gate_granularity == 'node':
            return [n.gate for n in self.nodes.values()]
        return [b.gate for n in self.nodes.values() for b in n.blocks]

    @torch.no_grad()
    def momentum_update(self):
        """Eq. 3 for every gate."""
        for gate in self.gates():
            gate.momentum_update()

    # --- FLOPs -----------------------------------------------------------------------------------------
    def row_shapes(self, img_shape: Tuple[int, int]) -> List[Tuple[int, int]]:
        h, w = _conv_out(img_shape[0], 7, 4, 3), _conv_out(img_shape[1], 7, 4, 3)
        shapes = [(h, w)]
        for _ in range(self.num_rows - 1):
            h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
            shapes.append((h, w))
        return shapes

    def stem_flops(self, img_shape: Tuple[int, int]) -> int:
        H, W = self.row_shapes(img_shape)[0]
        return H * W * self.stem_proj.in_channels * self.stem_proj.out_channels * 49

    def node_gate_flops(self, key: str, hw_shape: Tuple[int, int]) -> int:
        """C^gates of the row gate(s) of a node."""
        n = hw_shape[0] * hw_shape[1]
        node = self.nodes[key]
        if node.gate is not None:
            return node.gate.flops(n)
        return sum(blk.gate.flops(n) for blk in node.blocks)

    def dense_flops(self, img_shape: Tuple[int, int], include_gates: bool = True) -> int:
        """FLOPs with every gate open (the routing space's maximum, C^space of Eq. 6 with all gates 1)."""
        shapes = self.row_shapes(img_shape)
        total = self.stem_flops(img_shape)
        for (i, j) in self.node_ids:
            total += self.nodes[f'{i}_{j}'].row_flops(shapes[i])
            total += self.node_gate_flops(f'{i}_{j}', shapes[i]) if include_gates else 0
        for (i, j) in self.edge_ids:
            pe = self.embeds[f'{i}_{j}']
            total += pe.flops(shapes[i]) + (pe.gate_flops(shapes[i]) if include_gates else 0)
        return total

    def fixed_keep_for(self, gflops: float, img_shape: Tuple[int, int] = (224, 224)) -> float:
        """The row keep rate at which the FLOPs with column gates open are ``gflops`` (the ablations of
        Tables 6-7 at the paper's budget): ``(C - C^stem - C^col - C^gates) / sum C^row``."""
        shapes = self.row_shapes(img_shape)
        rows = sum(self.nodes[f'{i}_{j}'].row_flops(shapes[i]) for (i, j) in self.node_ids)
        return (gflops * 1e9 - (self.dense_flops(img_shape) - rows)) / rows

    def pvtv2_flops(self, img_shape: Tuple[int, int], depths: Optional[Sequence[int]] = None) -> int:
        """FLOPs of the PVTv2 baseline with the same widths (C^base of Eq. 6): stem, then one chain of
        stages of ``depths`` blocks (PVTv2's own depths for the named archs)."""
        if depths is None:
            if self.arch_name not in self.pvtv2_depths:
                raise ValueError('give the PVTv2 depths of a custom arch')
            depths = self.pvtv2_depths[self.arch_name]
        shapes = self.row_shapes(img_shape)
        total = self.stem_flops(img_shape)
        s = self.arch_settings
        for i in range(self.num_rows):
            with torch.device('meta'):
                blk = DiTBlock(s['embed_dims'][i], s['num_heads'][i], s['sr_ratios'][i], s['mlp_ratios'][i],
                               with_gate=False)
            total += depths[i] * blk.dense_flops(shapes[i])
            if i > 0:
                H, W = shapes[i]
                total += H * W * self.embed_dims[i - 1] * self.embed_dims[i] * 9
        return total

    # --- forward ---------------------------------------------------------------------------------------
    def _check_input(self, x: Tensor):
        if not isinstance(x, Tensor) or x.dim() != 4:
            raise ValueError(f'DiT expects a (B, C, H, W) tensor, got {getattr(x, "shape", type(x))}')
        if x.shape[1] != self.stem_proj.in_channels:
            raise ValueError(f'DiT was built for in_channels={self.stem_proj.in_channels}, got an input with '
                             f'{x.shape[1]} channels')
        if min(x.shape[2], x.shape[3]) < self.min_input_size:
            raise ValueError(f'DiT needs inputs of at least {self.min_input_size} x {self.min_input_size} pixels '
                             f'(every row map must cover its spatial-reduction kernel, sr_ratios='
                             f'{self.arch_settings["sr_ratios"]}), got {x.shape[2]} x {x.shape[3]}')

    def forward(self, x: Tensor) -> DiTOutputs:
        self._check_input(x)
        if self.training and self.momentum_in_forward:
            self.momentum_update()
        sparse = self.sparse_inference and not self.training
        B = x.shape[0]
        img_shape = (x.shape[2], x.shape[3])
        x = self.stem_proj(x)
        shapes = {i: s for i, s in enumerate(self.row_shapes(img_shape))}
        flops = x.new_full((B, ), float(self.stem_flops(img_shape)))
        feats: Dict[Tuple[int, int], Tensor] = {(0, 0): self.stem_norm(x.flatten(2).transpose(1, 2))}
        alive: Dict[Tuple[int, int], Tensor] = {(0, 0): x.new_ones(B)}
        routing = dict(row={}, col={}, alive=alive, shapes=shapes, img_shape=img_shape)
        outs: Dict[int, Tensor] = {}
        outs_row: Dict[Tuple[int, int], Tensor] = {}  # row term waiting for node (i, j + 1)
        col_in: Dict[Tuple[int, int], Tuple[Tensor, Tensor]] = {}  # column term waiting for node (i + 1, j)
        for (i, j) in self.node_ids:
            key = f'{i}_{j}'
            n_tok = shapes[i][0] * shapes[i][1]
            if (i, j) not in feats:  # Eq. 4: the row term and the column term (either may be absent)
                terms, live = [], []
                if (i, j - 1) in outs_row:
                    terms.append(outs_row.pop((i, j - 1)))
                    live.append(alive[(i, j - 1)])
                if (i - 1, j) in col_in:
                    f, g = col_in.pop((i - 1, j))
                    terms.append(f)
                    live.append(g)
                feats[(i, j)] = sum(terms[1:], terms[0])
                alive[(i, j)] = torch.stack(live).amax(0) if self.skip_dead_nodes else x.new_ones(B)
            f = feats.pop((i, j))
            # column path out of (i, j): G^col_{i,j} ⊙ P_{i,j}(F_{i,j}), decided on the node's input
            if (i, j) in self.edge_ids:
                pe = self.embeds[key]
                g_col, p_col = pe.gate(f.mean(1))
                g_col = g_col * alive[(i, j)]
                p_col = p_col * alive[(i, j)]
                if sparse:
                    on = (g_col > 0).nonzero().squeeze(1)
                    h_next, w_next = shapes[i + 1]
                    emb = f.new_zeros(B, h_next * w_next, pe.embed_dims)
                    if on.numel():
                        emb[on] = pe(f[on], shapes[i])[0]
                else:
                    emb = pe(f, shapes[i])[0] * g_col.view(B, 1, 1)
                col_in[(i, j)] = (emb, g_col.detach())
                routing['col'][(i, j)] = g_col.detach()
                flops = flops + p_col * pe.flops(shapes[i]) + pe.gate_flops(shapes[i])
            node = self.nodes[key]
            if node.gate is not None:  # per-node row gate G^row_{i,j} from F_{i,j} (Eqs. 4-5)
                g, p = node.gate(f)
                g = g * alive[(i, j)].view(B, 1)
                p = p * alive[(i, j)].view(B, 1)
                flops = flops + p.mean(1) * node.row_flops(shapes[i]) + node.gate.flops(n_tok)
                f = node.forward_sparse(f, shapes[i], g) if sparse else node.forward_dense(f, shapes[i], g)
                routing['row'][(i, j)] = g.detach().unsqueeze(1)
            else:  # per-block row gates
                row_gates = []
                for blk in node.blocks:
                    g, p = blk.gate(f)
                    g = g * alive[(i, j)].view(B, 1)
                    p = p * alive[(i, j)].view(B, 1)
                    any_routed = (g.detach() > 0).any(1).to(f.dtype)
                    fixed, per_token = blk.flops(shapes[i])
                    flops = flops + any_routed * fixed + p.mean(1) * (n_tok * per_token) + blk.gate.flops(n_tok)
                    f = blk.forward_sparse(f, shapes[i], g) if sparse else blk.forward_dense(f, shapes[i], g)
                    row_gates.append(g.detach())
                routing['row'][(i, j)] = torch.stack(row_gates, 1) if row_gates else f.new_zeros(B, 0, n_tok)
            if j == self.last_node[i]:
                if i in self.out_indices:
                    H, W = shapes[i]
                    outs[i] = self.out_norms[i](f).transpose(1, 2).reshape(B, -1, H, W)
            else:
                outs_row[(i, j)] = f
        complexity = dict(flops=flops, dense_flops=self.dense_flops(img_shape),
                          pvtv2_flops=self.pvtv2_flops(img_shape) if self.arch_name else None)
        return DiTOutputs([outs[i] for i in self.out_indices], complexity, routing)


def _check_int(name: str, value, minimum: int):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')


def _init_weights(m: nn.Module):
    """PVTv2 (timm) init: Linear trunc_normal(std=.02, bounds +-2) with zero bias; LayerNorm 1/0; Conv2d
    normal(0, sqrt(2 / fan_out)) with fan_out = k*k*C_out/groups, zero bias. Gates are re-initialised after
    this by :meth:`RoutingGate.reset_parameters` (bias for ``init_keep``, momentum copy = weights).

    The bounds +-2 are absolute, i.e. 100 standard deviations: ``normal_(0, .02).clamp_(-2, 2)`` draws from
    the same distribution as ``trunc_normal_`` and is 10x faster on CPU (the big variants build in seconds).
    """
    if isinstance(m, nn.Linear):
        with torch.no_grad():
            m.weight.normal_(0., .02).clamp_(-2., 2.)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)

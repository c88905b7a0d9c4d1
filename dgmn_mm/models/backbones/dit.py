"""DiT: the dynamic token routing Transformer backbone (our reconstruction).

"DiT: Efficient Vision Transformers with Dynamic Token Routing", Y. Ma, Z. Fei, J. Huang, arXiv 2308.03409.
No official code exists and the paper's text lacks its Sec. 3.2, so this is a reconstruction: every fact the
paper states is kept, and every choice we had to make is marked **[R]** below and is a constructor option
(see ``shared/specs/DiT.md``).

The network is a grid of nodes F_{i,j} (row i = scale with stride 4 * 2^i, column j = layer). A node holds a
cell B_{i,j} of PVTv2 blocks of scale i, each block with its own per-token **row gate** (dynamic depth), and a
per-image **column gate** on the patch embedding P_{i,j} that decides whether the whole map is downsampled
to node (i+1, j) (dynamic scale). Eq. 4::

    F_{i,j} = B_{i,j-1}(G^row ⊙ F_{i,j-1}) + (1 - G^row) ⊙ F_{i,j-1} + G^col_{i-1,j} ⊙ P_{i-1,j}(F_{i-1,j})

Tokens with G^row = 0 are copied; at inference they are *not computed* (gather -> compute -> scatter, see
:meth:`DiTBlock.forward_sparse`), which gives exactly the masked dense result of training
(:meth:`DiTBlock.forward_dense`). Every forward also counts the FLOPs each image used (Eq. 5), which the
complexity constraint of Eqs. 6-7 (:class:`dgmn_mm.models.dit_models.DiTBudgetLoss`) turns into a loss.

Module tree: ``stem`` (F_{0,0}), ``nodes['i_j'].blocks[k].{gate, norm1, attn, norm2, ffn}``,
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

GATE_MODES = ('learned', 'static', 'open', 'random')


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

    Args:
        in_dims (int): C of the gated tokens (or of the pooled map).
        norm (bool): [R] apply a non-affine LayerNorm to the input first (row gates: True).
        init_keep (float): [R] the bias is set so that ``softmax(b)[1] = init_keep`` (about 95% of the
            tokens are routed at the start of training).
        momentum (float): m of Eq. 3. Defaults to 0.999.
        tau (float): Gumbel-Softmax temperature. Defaults to 1.
        mode (str): 'learned' (the paper), 'static' (weights frozen at their init: Table 6 "Static"),
            'open' (G = 1: Table 6 "Fully" and the fixed paths of Table 8), 'random' (G ~ Bernoulli(
            random_keep) in training and inference: Table 7 "Random").
        random_keep (float): keep probability of the 'random' mode.

    Shapes:
        x (..., C) -> (G, P), each (...), G in {0, 1}.
    """

    def __init__(self, in_dims: int, norm: bool = True, init_keep: float = 0.95, momentum: float = 0.999,
                 tau: float = 1.0, mode: str = 'learned', random_keep: float = 0.5):
        super().__init__()
        if mode not in GATE_MODES:
            raise ValueError(f'gate mode must be one of {GATE_MODES}, got {mode!r}')
        if not 0. < init_keep < 1.:
            raise ValueError(f'init_keep must be in (0, 1), got {init_keep}')
        self.in_dims, self.norm, self.init_keep = in_dims, norm, init_keep
        self.momentum, self.tau, self.mode, self.random_keep = momentum, tau, mode, random_keep
        self.fc = nn.Linear(in_dims, 2)
        self.register_buffer('weight_ema', torch.zeros(2, in_dims))
        self.register_buffer('bias_ema', torch.zeros(2))
        self.reset_parameters()
        if mode != 'learned':  # 'static' keeps its init; 'open' and 'random' do not use the weights (and
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
        return self.mode in ('learned', 'static')

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

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        shape = x.shape[:-1]
        if self.mode == 'open':
            ones = x.new_ones(shape)
            return ones, ones
        if self.mode == 'random':
            p = x.new_full(shape, self.random_keep)
            return torch.bernoulli(p), p
        if self.training:
            logits = self.logits(x, use_momentum=False)
            g = F.gumbel_softmax(logits, tau=self.tau, hard=True)[..., 1]
            return g, logits.softmax(-1)[..., 1]
        logits = self.logits(x, use_momentum=True)
        g = (logits[..., 1] > logits[..., 0]).to(x.dtype)
        return g, g

    def flops(self, num_tokens: int) -> int:
        return num_tokens * self.in_dims * 2 if self.active else 0

    def extra_repr(self) -> str:
        return f'mode={self.mode}, momentum={self.momentum}, tau={self.tau}, init_keep={self.init_keep}'


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

    def attend(self, x: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """x: (B, M, C) normed query tokens (any M) -> (B, M, C)."""
        B, M, C = x.shape
        q = self.q(x).reshape(B, M, self.num_heads, self.head_dims).transpose(1, 2)
        attn = self.attn_drop((q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1))
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
    """A PVTv2 block (pre-norm, LN eps 1e-6) with a per-token row gate.

    Masked dense form (training; Eq. 4's row term for one block)::

        y = x + DropPath(Attn(LN1 x));  y = y + DropPath(FFN(LN2 y; G))
        out = G ⊙ y + (1 - G) ⊙ x

    The sparse form computes ``y`` only for the tokens with G = 1 and gives the same ``out``.

    Args:
        embed_dims, num_heads, sr_ratio, mlp_ratio: the PVTv2 hyper-parameters of the scale.
        gate_cfg (dict): kwargs of :class:`RoutingGate`.
        sparse_dwconv (str): see :class:`DWConvFFN`.
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int, mlp_ratio: float, qkv_bias: bool = True,
                 drop: float = 0., attn_drop: float = 0., drop_path: float = 0., gate_cfg: Optional[dict] = None,
                 sparse_dwconv: str = 'map'):
        super().__init__()
        self.gate = RoutingGate(embed_dims, norm=True, **(gate_cfg or {}))
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


class DiTNode(nn.Module):
    """Node (i, j): a cell B_{i,j} of PVTv2 blocks of scale i, each with its row gate."""

    def __init__(self, blocks: Sequence[DiTBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


# --------------------------------------------------------------------------------------------------------
# The backbone
# --------------------------------------------------------------------------------------------------------
@MODELS.register_module()
class DiT(BaseModule):
    """DiT backbone (arXiv 2308.03409), our reconstruction, for mmpretrain, mmdet and mmseg.

    A grid of nodes (i, j), i = scale (strides 4, 8, 16, 32; dims 64/128/320/512), j = column. [R] The grid
    has 4 columns and the nodes on the band ``|i - j| <= band`` (``band=1``: the 10 nodes (0,0), (0,1), (1,0),
    (1,1), (1,2), (2,1), (2,2), (2,3), (3,2), (3,3)); each node is a cell of ``depths[i]`` PVTv2 blocks of scale
    i. The stem (Conv 7x7 s4 + LN) gives F_{0,0}; patch embeddings P_{i,j} (Conv 3x3 s2 + LN) link node
    (i, j) to (i+1, j) when both exist. Nodes are evaluated column by column with Eq. 4 (terms whose source
    node does not exist are dropped).

    Gates (all :class:`RoutingGate`):

    - row gates, one per block, per token: ``LN(x) -> Linear(C, 2)`` [R], Gumbel-Softmax (hard,
      straight-through) in training, argmax with the momentum weights at inference (Eq. 3);
    - column gates, one per patch embedding, per image, on the mean token of F_{i,j}.

    [R] *Dead nodes*: a node that receives nothing for an image (all its incoming paths are closed or
    come from dead nodes) holds F = 0; with ``skip_dead_nodes`` its row gates are forced to 0 for that image
    (nothing is computed, its zero map is passed on) and its patch embedding is not applied.

    Momentum update (Eq. 3): [R] every training-mode forward first applies ``ŵ <- m·ŵ + (1-m)·w`` to every
    gate (``momentum_in_forward=True``), i.e. once per optimiser step, with the weights the previous step
    produced. Set it to False to call :meth:`momentum_update` yourself (e.g. from a hook, or with gradient
    accumulation, where a step has several forwards).

    Complexity (Eq. 5): each forward stores in :attr:`complexity` the FLOPs (multiply-adds) each image used:
    ``sum over blocks (1[any token routed] · C^kv + mean(G^row) · C^tok + C^gate) + sum over embeddings
    (G^col · C^col + C^gate) + C^stem``. C^kv (the key/value projection and the spatial reduction, paid once
    per image because skipped tokens still serve as keys/values) and C^tok (everything per query token) are
    Eq. 5's C^row split in two. In training the mean uses the soft gate probabilities (differentiable),
    in eval the hard gates (what the sparse inference computes). The budget loss of Eqs. 6-7 lives in the
    model wrappers (:mod:`dgmn_mm.models.dit_models`), which add it to the task losses.

    Args:
        arch (str | dict): 'b1' ... 'b5', or a dict with ``depths`` (blocks per node of each row),
            ``embed_dims``, ``num_heads``, ``sr_ratios``, ``mlp_ratios`` (4 values each).
        in_channels (int): input channels. Defaults to 3.
        band (int): [R] nodes (i, j) with ``|i - j| <= band`` on the 4 x 4 grid. Defaults to 1.
        out_indices (Sequence[int] | int): rows (scales) whose maps are returned. Defaults to (0, 1, 2, 3).
        qkv_bias (bool): Defaults to True.
        drop_rate, attn_drop_rate (float): dropouts. Defaults to 0.
        drop_path_rate (float): stochastic depth, linear from 0 over all blocks in evaluation order.
        row_gate (str): mode of the row gates (see :class:`RoutingGate`): 'learned' (default), 'static',
            'open', 'random'. Depth-only (Table 8): ``col_gate='open'``; scale-only: ``row_gate='open'``.
        col_gate (str): mode of the column gates. Defaults to 'learned'.
        gate_momentum (float): m of Eq. 3. Defaults to 0.999 [R].
        gate_tau (float): Gumbel-Softmax temperature. Defaults to 1.
        row_init_keep, col_init_keep (float): [R] initial routing probability. Defaults to 0.95.
        random_keep (float): keep probability of the 'random' gates. Defaults to 0.5.
        momentum_in_forward (bool): see above. Defaults to True.
        skip_dead_nodes (bool): see above. Defaults to True.
        sparse_inference (bool): eval-mode forward skips tokens (gather/compute/scatter) instead of
            computing the masked dense form. Same result. Defaults to True.
        sparse_dwconv (str): 'map' (default) or 'gather', see :class:`DWConvFFN`; it changes the FLOPs
            counted (C^kv includes the depth-wise conv at all positions with 'map').
        init_cfg (dict, optional): mmengine init config (e.g. ``Pretrained`` with ``prefix='backbone.'``).

    Shapes:
        input (B, in_channels, H, W) -> tuple of (B, C_i, H_i, W_i) for ``i in out_indices``, with
        ``H_0 = (H - 1) // 4 + 1`` and ``H_{i+1} = (H_i - 1) // 2 + 1``; each map is the LayerNorm (eps
        1e-6) of the last node of row i [R].
    """
    arch_zoo = {
        # [R] blocks per node of rows 0..3 (rows have 2, 3, 3, 2 nodes), fitted to the paper's parameter
        # counts (with a 1000-class head): 30.21 / 55.79 / 86.07 / 125.86 / 157.96 M. The spec's
        # (2,3,2,1), (3,4,6,1), (3,4,10,3), (3,8,16,2), (3,6,23,3) give 4-11% less with exact PVTv2 blocks.
        'b1': dict(depths=(2, 1, 2, 2), mlp_ratios=(8, 8, 4, 4)),
        'b2': dict(depths=(3, 3, 5, 3), mlp_ratios=(8, 8, 4, 4)),
        'b3': dict(depths=(3, 6, 10, 3), mlp_ratios=(8, 8, 4, 4)),
        'b4': dict(depths=(3, 8, 16, 4), mlp_ratios=(8, 8, 4, 4)),
        'b5': dict(depths=(3, 6, 25, 3), mlp_ratios=(4, 4, 4, 4)),
    }
    # PVTv2 baselines (the same widths, one chain of stages) for C^base of Eq. 6
    pvtv2_depths = {'b1': (2, 2, 2, 2), 'b2': (3, 4, 6, 3), 'b3': (3, 4, 18, 3), 'b4': (3, 8, 27, 3),
                    'b5': (3, 6, 40, 3)}
    default_widths = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), sr_ratios=(8, 4, 2, 1))
    num_rows = num_columns = 4

    def __init__(self,
                 arch='b1',
                 in_channels: int = 3,
                 band: int = 1,
                 out_indices=(0, 1, 2, 3),
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 row_gate: str = 'learned',
                 col_gate: str = 'learned',
                 gate_momentum: float = 0.999,
                 gate_tau: float = 1.0,
                 row_init_keep: float = 0.95,
                 col_init_keep: float = 0.95,
                 random_keep: float = 0.5,
                 momentum_in_forward: bool = True,
                 skip_dead_nodes: bool = True,
                 sparse_inference: bool = True,
                 sparse_dwconv: str = 'map',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.arch_name = arch.lower() if isinstance(arch, str) else None
        self.arch_settings = self._parse_arch(arch)
        s = self.arch_settings
        dims, depths = s['embed_dims'], s['depths']
        if isinstance(out_indices, int):
            out_indices = (out_indices, )
        out_indices = tuple(i % self.num_rows if -self.num_rows <= i < self.num_rows else i for i in out_indices)
        if not out_indices or any(not 0 <= i < self.num_rows for i in out_indices):
            raise ValueError(f'out_indices must be in [-4, 3], got {out_indices}')
        self.out_indices = out_indices
        self.embed_dims = dims
        self.momentum_in_forward = momentum_in_forward
        self.skip_dead_nodes = skip_dead_nodes
        self.sparse_inference = sparse_inference

        self.node_ids: List[Tuple[int, int]] = [(i, j) for j in range(self.num_columns) for i in range(self.num_rows)
                                                if abs(i - j) <= band]
        if (0, 0) not in self.node_ids or any(not any(n[0] == i for n in self.node_ids)
                                               for i in range(self.num_rows)):
            raise ValueError(f'band={band} leaves a row without nodes')
        self.edge_ids = [(i, j) for (i, j) in self.node_ids if (i + 1, j) in self.node_ids]
        self.last_node = {i: max(j for (r, j) in self.node_ids if r == i) for i in range(self.num_rows)}

        row_cfg = dict(mode=row_gate, momentum=gate_momentum, tau=gate_tau, init_keep=row_init_keep,
                       random_keep=random_keep)
        col_cfg = dict(mode=col_gate, momentum=gate_momentum, tau=gate_tau, init_keep=col_init_keep,
                       random_keep=random_keep)
        self.stem_proj = nn.Conv2d(in_channels, dims[0], 7, 4, 3)
        self.stem_norm = nn.LayerNorm(dims[0])
        total = sum(depths[i] for (i, _) in self.node_ids)
        dpr = iter([drop_path_rate * k / max(total - 1, 1) for k in range(total)])  # = torch.linspace
        self.nodes = nn.ModuleDict()
        self.embeds = nn.ModuleDict()
        for (i, j) in self.node_ids:
            self.nodes[f'{i}_{j}'] = DiTNode([
                DiTBlock(dims[i], s['num_heads'][i], s['sr_ratios'][i], s['mlp_ratios'][i], qkv_bias, drop_rate,
                         attn_drop_rate, next(dpr), row_cfg, sparse_dwconv) for _ in range(depths[i])
            ])
            if (i, j) in self.edge_ids:
                self.embeds[f'{i}_{j}'] = GatedPatchEmbed(dims[i], dims[i + 1], col_cfg)
        self.out_norms = nn.ModuleList(nn.LayerNorm(dims[i], eps=1e-6) for i in range(self.num_rows))
        self.num_features = [dims[i] for i in self.out_indices]
        self.complexity: Dict[str, object] = {}
        self.routing: Dict[str, object] = {}
        self.apply(_init_weights)
        for m in self.modules():
            if isinstance(m, RoutingGate):
                m.reset_parameters()

    @classmethod
    def _parse_arch(cls, arch) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in cls.arch_zoo:
                raise ValueError(f'unknown DiT arch {arch!r}; choose from {sorted(cls.arch_zoo)} or pass a dict')
            return {**cls.default_widths, **cls.arch_zoo[key]}
        if isinstance(arch, dict):
            keys = ('depths', 'embed_dims', 'num_heads', 'sr_ratios', 'mlp_ratios')
            missing = set(keys) - set(arch)
            if missing:
                raise ValueError(f'arch dict is missing {sorted(missing)}')
            if any(len(arch[k]) != cls.num_rows for k in keys):
                raise ValueError(f'every entry of the arch dict must have {cls.num_rows} values')
            return {k: tuple(arch[k]) for k in keys}
        raise TypeError(f'arch must be a str or a dict, got {type(arch)}')

    # --- gates -----------------------------------------------------------------------------------------
    def gates(self) -> List[RoutingGate]:
        return [m for m in self.modules() if isinstance(m, RoutingGate)]

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

    def dense_flops(self, img_shape: Tuple[int, int], include_gates: bool = True) -> int:
        """FLOPs with every gate open (the routing space's maximum)."""
        shapes = self.row_shapes(img_shape)
        total = self.stem_flops(img_shape)
        for (i, j) in self.node_ids:
            for blk in self.nodes[f'{i}_{j}'].blocks:
                fixed, per_token = blk.flops(shapes[i])
                n = shapes[i][0] * shapes[i][1]
                total += fixed + n * per_token + (blk.gate.flops(n) if include_gates else 0)
        for (i, j) in self.edge_ids:
            pe = self.embeds[f'{i}_{j}']
            total += pe.flops(shapes[i]) + (pe.gate_flops(shapes[i]) if include_gates else 0)
        return total

    def pvtv2_flops(self, img_shape: Tuple[int, int], depths: Optional[Sequence[int]] = None) -> int:
        """FLOPs of the PVTv2 baseline with the same widths (C^base of Eq. 6): stem, then one chain of
        stages of ``depths`` blocks (PVTv2's own depths for the named archs)."""
        if depths is None:
            if self.arch_name not in self.pvtv2_depths:
                raise ValueError('give the PVTv2 depths of a custom arch')
            depths = self.pvtv2_depths[self.arch_name]
        shapes = self.row_shapes(img_shape)
        total = self.stem_flops(img_shape)
        for i in range(self.num_rows):
            blk = self.nodes[f'{i}_{self.last_node[i]}'].blocks[0]
            fixed, per_token = blk.flops(shapes[i])
            total += depths[i] * (fixed + shapes[i][0] * shapes[i][1] * per_token)
            if i > 0:
                H, W = shapes[i]
                total += H * W * self.embed_dims[i - 1] * self.embed_dims[i] * 9
        return total

    # --- forward ---------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        if self.training and self.momentum_in_forward:
            self.momentum_update()
        sparse = self.sparse_inference and not self.training
        B = x.shape[0]
        img_shape = (x.shape[2], x.shape[3])
        x = self.stem_proj(x)
        shapes = {i: s for i, s in enumerate(self.row_shapes(img_shape))}
        assert tuple(x.shape[2:]) == shapes[0]
        flops = x.new_full((B, ), float(self.stem_flops(img_shape)))
        feats: Dict[Tuple[int, int], Tensor] = {(0, 0): self.stem_norm(x.flatten(2).transpose(1, 2))}
        alive: Dict[Tuple[int, int], Tensor] = {(0, 0): x.new_ones(B)}
        routing = dict(row={}, col={}, alive=alive, shapes=shapes, img_shape=img_shape)
        outs: Dict[int, Tensor] = {}
        outs_row: Dict[Tuple[int, int], Tensor] = {}  # row term waiting for node (i, j + 1)
        col_in: Dict[Tuple[int, int], Tuple[Tensor, Tensor]] = {}  # column term waiting for node (i + 1, j)
        for (i, j) in self.node_ids:
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
                pe = self.embeds[f'{i}_{j}']
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
            # row path: the cell B_{i,j}, block by block, each with its row gate
            row_gates = []
            for blk in self.nodes[f'{i}_{j}'].blocks:
                g, p = blk.gate(f)
                g = g * alive[(i, j)].view(B, 1)
                p = p * alive[(i, j)].view(B, 1)
                any_routed = (g.detach() > 0).any(1).to(f.dtype)
                fixed, per_token = blk.flops(shapes[i])
                flops = flops + any_routed * fixed + p.mean(1) * (n_tok * per_token) + blk.gate.flops(n_tok)
                f = blk.forward_sparse(f, shapes[i], g) if sparse else blk.forward_dense(f, shapes[i], g)
                row_gates.append(g.detach())
            routing['row'][(i, j)] = row_gates
            if j == self.last_node[i]:
                if i in self.out_indices:
                    H, W = shapes[i]
                    outs[i] = self.out_norms[i](f).transpose(1, 2).reshape(B, -1, H, W)
            else:
                outs_row[(i, j)] = f
        self.complexity = dict(flops=flops, dense_flops=self.dense_flops(img_shape),
                               pvtv2_flops=self.pvtv2_flops(img_shape) if self.arch_name else None)
        self.routing = routing
        return tuple(outs[i] for i in self.out_indices)


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

"""DGMN: the dynamic graph message passing module (CVPR 2020; TPAMI 2022 Sec. 3.2-3.5).

"Dynamic Graph Message Passing Networks", L. Zhang, D. Xu, A. Arnab and P. H. S. Torr, CVPR 2020, and its
journal version (TPAMI 2022, Sec. 3 and 5). The module refines a feature map F (B, C, H, W) in one message
passing step (T = 1, Sec. 3.5) from S messages M_q, one per sampling rate rho_q (``dilations``), each over
K = kernel_size ** 2 sampled nodes with G filter groups (``groups``; channel c uses the filter of group
g(c) = c // (C / G), contiguous groups as in the release)::

    M_q[c, i] = sum_{k=1..K} A'^q_{i,k} * w^q_{g(c), i, k} * rho(F[c] | V, p_k(i), Delta d^q_{i,k})  (Eq. 5)

The released code (github ``lzrobots/dgmn``, ``maskrcnn_benchmark/layers/dynamic_weight.py``) has two
families of the module, both implemented here (``fusion``):

``fusion='scale'`` - the "rigorous" ``ReDynamicWeightsCat33`` (used by the release's ``resnet.py`` for COCO;
our COCO configs, default)::

    H^(1) = F + sum_q beta_q * M_q                                                   (Eqs. 2, 3, 5)

1. *Uniform sampling* (Sec. 3.3, "US" in Fig. 2): the K nodes of a kernel_size x kernel_size grid dilated
   by rho_q around node i.
2. *Dynamic sampling* (DS, Eq. 4): walks Delta d^q = W^q v^q_i, a 3x3 conv with dilation rho_q over the
   uniformly sampled nodes (``walk_convs[q]``, 2K outputs, no bias, as released: ``off_conv``); the new nodes
   are read with the bilinear sampler rho of Eq. 5 (:func:`~dgmn_mm.models.layers.node_sampling.sample_nodes`,
   DCNv1 rule).
3. *Dynamic filters and affinities* (DW, DA, Eqs. 6-7): ``{w^q, A'^q} = W^{k,A} v'^q_i``, a 3x3 conv over
   the sampled nodes (``filter_affinity_convs[q]``): a ``mmcv.ops.DeformConv2d`` fed with the same walks when
   DS is on (the released ``kernel_conv``), a plain dilated ``nn.Conv2d`` otherwise. Output channels
   [G*K filters (group-major, g * K + k)] then [K affinities]; softmax over the K nodes on the affinities
   (Eq. 7), none on the filters.

``fusion='concat'`` - the "fast" ``DynamicWeightsCat33`` (``deform='deformatt'`` with DS, ``'none'`` without),
the layout whose parameters and FLOPs are those of the paper's Table 2 (see ``docs/dgmn.md``)::

    H^(1) = F + ReLU(GN(W_f [F, M_1, ..., M_S] + b_f))                  (release ``scale2``, 1x1 conv)

1. One plain 3x3 conv at dilation rho_q over the *uniform* nodes per rate (``pred_convs[q]``, no bias,
   release ``cat{a..d}``) predicts everything: [G*K filters][2K walks (DS)][K affinities (DA)].
2. Filters: softmax over the K nodes per group (release). Affinities: a sigmoid when the filters are
   dynamic (release ``deformatt``: ``att.sigmoid()``), the softmax of Eq. 7 when they are the only weights
   (the release's ``deform='none'`` module with one group is exactly that).
3. With DS the nodes are read bilinearly at the walked positions (release ``DeformUnfold``, the same DCNv1
   rule), else the uniform grid (``nn.Unfold``).
4. ``fuse``: concatenation of F and the S messages, a 1x1 conv (S+1)C -> C with bias, GroupNorm(32) and
   ReLU (release ``scale2``), added to F. No beta_q (the 1x1 conv weighs the messages).

The three switches give the paper's ablation rows (Sec. 5.2, Table 2 / supplementary Table 14):

=================  ===================  ===================  ====================================
row                ``dynamic_sampling``  ``dynamic_weights``  ``dynamic_affinity``
=================  ===================  ===================  ====================================
``base`` (3.2)     False                False                False
``w/ DA``          False                False                True
``w/ DA+DW``       False                True                 True
``w/ DA+DW+DS``    True                 True                 True   (full model, release default)
=================  ===================  ===================  ====================================

- ``dynamic_sampling=False``: the nodes are the fixed uniform dilated grid (Delta d = 0); no walk predictor.
- ``dynamic_weights=False``: ``'scale'``: w^q is a learned, *position-shared* filter ``static_filters[q]``
  of shape (G, K) (w_j^q of Eqs. 3/5), initialised to 1. ``'concat'``: no filter (w = 1, "G = 0" in the
  paper's supplementary Table 15); the 1x1 fusion conv weighs the channels.
- ``dynamic_affinity=False``: A'^q = 1 / K (the fixed uniform neighbourhood of Sec. 3.2/3.3); with
  ``'concat'`` and dynamic (already softmax-normalised) filters, A' = 1.
- ``base`` is therefore plain multi-rate message passing: each message is the mean of the K uniformly
  sampled nodes (at initialisation for ``'scale'``).

Release -> ours (``'scale'``): ``off_conv{a..d}`` -> ``walk_convs.{0..3}``, ``kernel_conv{a..d}`` ->
``filter_affinity_convs.{0..3}``, ``gamma{1..4}`` -> ``beta[0..3]``; (``'concat'``): ``cat{a..d}`` ->
``pred_convs.{0..3}``, ``scale2`` -> ``fuse`` (``conv``, ``gn``). Init as released (PyTorch defaults:
kaiming-uniform(a=sqrt(5)), i.e. uniform(+-1/sqrt(9 C)) for the 3x3 predictors; GroupNorm 1/0; beta = 1).
The release's ``ReDynamicWeightsCat33`` takes the affinities of its 4th branch (rate index 3) from the last
K channels of the *filter* slice; ``release_branch4_bug=True`` reproduces that (``'scale'`` only, off by
default). The release's ``shuffle`` (random permutation of the filter groups in training) is not ported
(it is off in every released configuration).

Differences from the paper's equations, kept as released: no bias in Eqs. 4 and 6; ``'scale'``: no
non-linearity sigma after the update (Eq. 2) and a single scalar beta_q per rate (Eq. 3); ``'concat'``:
the filters, walks and affinities are predicted from the uniform nodes v_i (not from v'_i as in Eq. 6).
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.ops import DeformConv2d
from mmcv.ops.deform_conv import deform_conv2d
from mmengine.model import BaseModule
from torch import Tensor

from ...registry import MODELS
from .node_sampling import offsets_to_walk, sample_nodes

FUSIONS = ('scale', 'concat')


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_dgmn_args(in_channels=None, dilations=(1, ), groups=1, kernel_size=3, dynamic_sampling=True,
                    dynamic_weights=True, dynamic_affinity=True, fusion='scale', release_branch4_bug=False,
                    fuse_norm_cfg=None) -> Tuple[int, ...]:
    """Validate the arguments of :class:`DGMN` (``in_channels=None`` skips the channel checks).

    Returns:
        tuple[int]: ``dilations`` as a tuple.

    Raises:
        TypeError / ValueError: naming the argument and its allowed values.
    """
    if in_channels is not None and (not _is_int(in_channels) or in_channels < 1):
        raise ValueError(f'in_channels must be a positive int, got {in_channels!r}')
    if isinstance(dilations, (str, bytes)) or not isinstance(dilations, Sequence) or not len(dilations) or \
            not all(_is_int(d) and d >= 1 for d in dilations):
        raise ValueError(f'dilations must be a non-empty sequence of positive ints, got {dilations!r}')
    if not _is_int(groups) or groups < 1:
        raise ValueError(f'groups must be a positive int, got {groups!r}')
    if in_channels is not None and in_channels % groups:
        raise ValueError(f'in_channels ({in_channels}) must be divisible by groups ({groups})')
    if not _is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 != 1:
        raise ValueError(f'kernel_size must be a positive odd int, got {kernel_size!r}')
    for name, v in (('dynamic_sampling', dynamic_sampling), ('dynamic_weights', dynamic_weights),
                    ('dynamic_affinity', dynamic_affinity), ('release_branch4_bug', release_branch4_bug)):
        if not isinstance(v, bool):
            raise TypeError(f'{name} must be a bool (True or False), got {v!r}')
    if fusion not in FUSIONS:
        raise ValueError(f'fusion must be one of {FUSIONS}, got {fusion!r}')
    if release_branch4_bug and not (fusion == 'scale' and dynamic_weights and dynamic_affinity
                                    and len(dilations) >= 4):
        raise ValueError("release_branch4_bug needs fusion='scale', dynamic_weights, dynamic_affinity "
                         'and >= 4 dilations')
    if fuse_norm_cfg is not None and (not isinstance(fuse_norm_cfg, dict) or 'type' not in fuse_norm_cfg):
        raise TypeError(f'fuse_norm_cfg must be a dict with a "type" key, got {fuse_norm_cfg!r}')
    if fuse_norm_cfg is not None and fusion != 'concat':
        raise ValueError("fuse_norm_cfg is only used with fusion='concat'")
    if fusion == 'concat' and fuse_norm_cfg is None and in_channels is not None and in_channels % 32:
        raise ValueError(f"in_channels ({in_channels}) must be divisible by 32 for fusion='concat' with the "
                         "default fuse_norm_cfg=dict(type='GN', num_groups=32); pass another fuse_norm_cfg")
    return tuple(dilations)


@MODELS.register_module()
class DGMN(BaseModule):
    """Dynamic graph message passing module (a ResNet plug-in and the context module of :class:`DGMNHead`).

    Input and output have the same shape (B, C, H, W); any H, W >= 1.

    As an mmdet/mmseg ResNet plug-in (``in_channels`` is filled in by ``build_plugin_layer``)::

        plugins=[dict(cfg=dict(type='DGMN', dilations=(1, 4, 8, 12), groups=4),
                      stages=(False, False, False, True), position='after_conv2')]

    Args:
        in_channels (int): C, positive, divisible by ``groups``.
        dilations (Sequence[int]): the S sampling rates rho_q, positive ints. Defaults to (1, 4, 8, 12)
            (COCO, release).
        groups (int): G, the number of dynamic filter groups. Defaults to 4.
        kernel_size (int): side of the uniformly sampled neighbourhood (odd), K = kernel_size ** 2.
            Defaults to 3.
        dynamic_sampling (bool): DS, predict walks (Eq. 4) and sample bilinearly. Defaults to True.
        dynamic_weights (bool): DW, node-conditioned filters (Eq. 6). Defaults to True.
        dynamic_affinity (bool): DA, node-conditioned affinities (Eqs. 6-7). Defaults to True.
        fusion (str): ``'scale'`` (``x + sum_q beta_q M_q``, release ``ReDynamicWeightsCat33``) or
            ``'concat'`` (``x + ReLU(GN(conv1x1([x, M_1..M_S])))``, release ``DynamicWeightsCat33``).
            Defaults to ``'scale'``.
        release_branch4_bug (bool): reproduce the released code's branch-4 affinity bug (see module doc).
            Needs ``fusion='scale'``, DW, DA and at least 4 rates. Defaults to False.
        fuse_norm_cfg (dict, optional): norm of the ``'concat'`` fusion. Defaults to
            ``dict(type='GN', num_groups=32)`` (release ``group_norm``) for ``'concat'``.
        init_cfg (dict, optional): mmengine init config; by default the released initialisation is used.

    Shapes:
        - input: (B, C, H, W)
        - output: (B, C, H, W)
    """
    _abbr_ = 'dgmn'

    def __init__(self,
                 in_channels: int,
                 dilations: Sequence[int] = (1, 4, 8, 12),
                 groups: int = 4,
                 kernel_size: int = 3,
                 dynamic_sampling: bool = True,
                 dynamic_weights: bool = True,
                 dynamic_affinity: bool = True,
                 fusion: str = 'scale',
                 release_branch4_bug: bool = False,
                 fuse_norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        dilations = check_dgmn_args(in_channels, dilations, groups, kernel_size, dynamic_sampling,
                                    dynamic_weights, dynamic_affinity, fusion, release_branch4_bug,
                                    fuse_norm_cfg)
        self.in_channels = in_channels
        self.dilations = dilations
        self.groups = groups
        self.kernel_size = kernel_size
        self.num_nodes = kernel_size * kernel_size  # K
        self.dynamic_sampling = dynamic_sampling
        self.dynamic_weights = dynamic_weights
        self.dynamic_affinity = dynamic_affinity
        self.fusion = fusion
        self.release_branch4_bug = release_branch4_bug
        S, K, G, C = len(dilations), self.num_nodes, groups, in_channels
        pad = [(kernel_size - 1) // 2 * r for r in dilations]

        if fusion == 'concat':
            # release cat{a..d}: [G*K filters][2K walks][K affinities] from the uniform nodes
            self.num_pred_channels = G * K * dynamic_weights + 2 * K * dynamic_sampling + K * dynamic_affinity
            if self.num_pred_channels:
                self.pred_convs = nn.ModuleList(
                    nn.Conv2d(C, self.num_pred_channels, kernel_size, padding=p, dilation=r, bias=False)
                    for r, p in zip(dilations, pad))
            # release scale2: 1x1 conv (S+1)C -> C with bias, GroupNorm, ReLU
            norm_cfg = fuse_norm_cfg if fuse_norm_cfg is not None else dict(type='GN', num_groups=32)
            self.fuse = nn.Sequential()
            self.fuse.add_module('conv', nn.Conv2d((S + 1) * C, C, 1, bias=True))
            self.fuse.add_module('gn', build_norm_layer(norm_cfg, C)[1])
            self.fuse.add_module('relu', nn.ReLU(inplace=True))
        else:
            # Eq. 4: walk predictor W^q (3x3 at rate rho_q over the uniformly sampled nodes) -> 2K walks (dy, dx)
            if dynamic_sampling:
                self.walk_convs = nn.ModuleList(
                    nn.Conv2d(C, 2 * K, kernel_size, padding=p, dilation=r, bias=False)
                    for r, p in zip(dilations, pad))
            # Eq. 6: W^{k,A} over the (adaptively) sampled nodes -> [G*K filters][K affinities]
            self.num_pred_channels = G * K * dynamic_weights + K * dynamic_affinity
            if self.num_pred_channels:
                conv = DeformConv2d if dynamic_sampling else nn.Conv2d
                extra = {} if dynamic_sampling else dict(bias=False)
                self.filter_affinity_convs = nn.ModuleList(
                    conv(C, self.num_pred_channels, kernel_size, padding=p, dilation=r, **extra)
                    for r, p in zip(dilations, pad))
            # w^q of Eqs. 3/5 when the filters are not dynamic: one learned (G, K) filter per rate
            if not dynamic_weights:
                self.static_filters = nn.Parameter(torch.ones(S, G, K))
            # beta_q of Eq. 3 (release: gamma1..4, initialised to 1)
            self.beta = nn.Parameter(torch.ones(S))
        self._init_release()

    # ----------------------------------------------------------------------------------------------------
    def _init_release(self):
        """Released initialisation: PyTorch defaults for the plain convs (walks, ``'concat'`` predictors and
        fusion), W^{k,A} uniform(+-1/sqrt(C K)), norm 1/0, beta = 1."""
        if self.fusion == 'concat':
            if self.num_pred_channels:
                for m in self.pred_convs:
                    m.reset_parameters()
            self.fuse.conv.reset_parameters()
            self.fuse.gn.reset_parameters()
            return
        if self.dynamic_sampling:
            for m in self.walk_convs:
                nn.Conv2d.reset_parameters(m)
        if self.num_pred_channels:
            bound = 1. / math.sqrt(self.in_channels * self.num_nodes)
            for m in self.filter_affinity_convs:
                nn.init.uniform_(m.weight, -bound, bound)
        if not self.dynamic_weights:
            nn.init.ones_(self.static_filters)
        nn.init.ones_(self.beta)

    def init_weights(self):
        """Re-apply the released initialisation (so that a parent's e.g. Kaiming ``init_cfg`` on Conv2d does
        not overwrite it), unless an explicit ``init_cfg`` was given."""
        if self.init_cfg is not None:
            super().init_weights()
        else:
            self._init_release()
            self._is_init = True

    # ----------------------------------------------------------------------------------------------------
    def predict_walks(self, x: Tensor, q: int) -> Tensor:
        """Eq. 4 for rate q (``fusion='scale'``). x: (B, C, H, W) -> DCN-layout offsets (B, 2K, H, W),
        channel 2k = dy_k, 2k+1 = dx_k.

        Zeros (uniform sampling) when ``dynamic_sampling`` is off."""
        B, _, H, W = x.shape
        if not self.dynamic_sampling:
            return x.new_zeros(B, 2 * self.num_nodes, H, W)
        return self.walk_convs[q](x)

    def _deform_conv(self, conv: DeformConv2d, x: Tensor, offset: Tensor) -> Tensor:
        """``conv(x, offset)`` for any batch size (mmcv needs B divisible by its im2col step), tiny maps."""
        H, W = x.shape[-2:]
        pad_h, pad_w = max(conv.kernel_size[0] - H, 0), max(conv.kernel_size[1] - W, 0)
        if pad_h or pad_w:  # as DeformConv2d.forward: mmcv's kernel asserts input >= kernel
            x = F.pad(x, (0, pad_w, 0, pad_h))
            offset = F.pad(offset, (0, pad_w, 0, pad_h))
        out = deform_conv2d(x.contiguous(), offset.contiguous(), conv.weight, conv.stride, conv.padding,
                            conv.dilation, conv.groups, conv.deform_groups, False,
                            math.gcd(x.shape[0], conv.im2col_step))
        return out[:, :, :H, :W]

    def filters_and_affinities(self, x: Tensor, offset: Tensor, q: int) -> Tuple[Tensor, Tensor]:
        """Eqs. 6-7 for rate q (``fusion='scale'``).

        Args:
            x (Tensor): (B, C, H, W) input F.
            offset (Tensor): (B, 2K, H, W) walks of rate q (zeros without DS).

        Returns:
            tuple[Tensor, Tensor]: filters w^q, (B, G, K, H, W) or (1, G, K, 1, 1) if static, and affinities
            A'^q, (B, 1, K, H, W) after the softmax over K, or a (1, 1, 1, 1, 1) tensor holding 1/K.
        """
        B, _, H, W = x.shape
        G, K = self.groups, self.num_nodes
        if self.num_pred_channels:
            conv = self.filter_affinity_convs[q]
            o = self._deform_conv(conv, x, offset) if self.dynamic_sampling else conv(x)
        if self.dynamic_weights:
            w = o[:, :G * K].reshape(B, G, K, H, W)
        else:
            w = self.static_filters[q].view(1, G, K, 1, 1)
        if self.dynamic_affinity:
            start = G * K * self.dynamic_weights
            if self.release_branch4_bug and q == 3:
                start = G * K - K  # released branch 4: last K channels of the filter slice (group G-1)
            a = o[:, start:start + K].softmax(dim=1).unsqueeze(1)
        else:
            a = x.new_full((1, 1, 1, 1, 1), 1. / K)
        return w, a

    def predict_concat(self, x: Tensor, q: int) -> Tuple[Tensor, Tensor, Tensor]:
        """``fusion='concat'``: filters, walks and affinities of rate q from one conv over the uniform nodes.

        Returns:
            tuple[Tensor, Tensor, Tensor]: filters (B, G, K, H, W) softmax-normalised over K, or a
            (1, 1, 1, 1, 1) one; DCN-layout walks (B, 2K, H, W) (zeros without DS); affinities
            (B, 1, K, H, W) (sigmoid with DW, softmax over K without), or (1, 1, 1, 1, 1) holding 1/K
            (no DW) or 1 (DW).
        """
        B, _, H, W = x.shape
        G, K = self.groups, self.num_nodes
        o = self.pred_convs[q](x) if self.num_pred_channels else None
        start = 0
        if self.dynamic_weights:
            w = o[:, :G * K].reshape(B, G, K, H, W).softmax(dim=2)
            start = G * K
        else:
            w = x.new_ones(1, 1, 1, 1, 1)
        if self.dynamic_sampling:
            offset = o[:, start:start + 2 * K]
            start += 2 * K
        else:
            offset = x.new_zeros(B, 2 * K, H, W)
        if self.dynamic_affinity:
            logits = o[:, start:start + K].unsqueeze(1)
            a = logits.sigmoid() if self.dynamic_weights else logits.softmax(dim=2)
        else:
            a = x.new_full((1, 1, 1, 1, 1), 1. if self.dynamic_weights else 1. / K)
        return w, offset, a

    def sample(self, x: Tensor, offset: Tensor, q: int) -> Tensor:
        """The K nodes of every receiving node for rate q: (B, G, C / G, K, H, W).

        With DS, the bilinear sampler rho of Eq. 5 at the walked positions (:func:`sample_nodes`, DCNv1 rule);
        without, the uniform dilated grid, an exact gather (``F.unfold``, zeros outside the map)."""
        B, C, H, W = x.shape
        G, K, ks, r = self.groups, self.num_nodes, self.kernel_size, self.dilations[q]
        if self.dynamic_sampling:
            nodes = sample_nodes(x, offsets_to_walk(offset, (H, W)), ks, r)  # (B, C, H, W, K)
            return nodes.permute(0, 1, 4, 2, 3).reshape(B, G, C // G, K, H, W)
        nodes = F.unfold(x, ks, dilation=r, padding=(ks - 1) // 2 * r)  # (B, C * K, H * W), c-major
        return nodes.view(B, G, C // G, K, H, W)

    def message(self, x: Tensor, q: int) -> Tensor:
        """M_q (B, C, H, W) of Eq. 5: ``M_q[c, i] = sum_k A'[i, k] w[g(c), i, k] x~[c, i, k]``."""
        B, C, H, W = x.shape
        G, K = self.groups, self.num_nodes
        if self.fusion == 'concat':
            w, offset, a = self.predict_concat(x, q)
        else:
            offset = self.predict_walks(x, q)
        nodes = self.sample(x, offset, q)  # (B, G, C / G, K, H, W)
        if self.fusion != 'concat':
            w, a = self.filters_and_affinities(x, offset, q)
        weight = (w * a).expand(B, G, K, H, W)  # position-shared weights: one (G, K) filter everywhere
        m = torch.einsum('bgrkhw,bgkhw->bgrhw', nodes, weight)
        return m.reshape(B, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> ``x + sum_q beta_q M_q`` or ``x + fuse([x, M_1..M_S])``, (B, C, H, W)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'expected (B, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}')
        S = len(self.dilations)
        if self.fusion == 'concat':
            return x + self.fuse(torch.cat([x] + [self.message(x, q) for q in range(S)], dim=1))
        out = x
        for q in range(S):
            out = out + self.beta[q] * self.message(x, q)
        return out

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, dilations={self.dilations}, groups={self.groups}, '
                f'DS={self.dynamic_sampling}, DW={self.dynamic_weights}, DA={self.dynamic_affinity}, '
                f'fusion={self.fusion!r}, release_branch4_bug={self.release_branch4_bug}')


# --------------------------------------------------------------------------------------------------------
# Complexity: ours (everything the module computes) and the paper's convention (standard layers only)
# --------------------------------------------------------------------------------------------------------
def dgmn_complexity(module: DGMN, hw_shape: Tuple[int, int]) -> Dict[str, int]:
    """Count the parameters and the multiply-accumulates of one :class:`DGMN` forward, analytically.

    Conventions (those of ``mmengine.analysis`` / fvcore and of OpenMMLab's ``get_flops``): one
    multiply-add = one FLOP, per image (batch 1); a bilinear sample costs 4 per sampled value (the
    ``aten::grid_sampler`` rule of mmengine); softmax, sigmoid, ReLU, additions and the uniform
    (integer-position) gather cost 0; GroupNorm costs 5 per element (mmengine's affine norm rule).

    Per rate, with N = H W, C channels, K nodes, G groups and P = ``num_pred_channels``:

    - ``walk``: C * 2K * K * N (``'scale'`` with DS; with ``'concat'`` the walks are part of ``pred``);
    - ``sampling``: 4 * C * K * N for the message nodes (DS only; a plain gather without DS);
    - ``pred``: C * P * K * N for the predictor, plus 4 * C * K * N when it is a DeformConv2d (``'scale'``
      with DS: the DCN resamples its input, as the release's DeformUnfold and DeformConv do separately);
    - ``weight``: G * K * N for w * A' (when both are position-specific);
    - ``message``: C * K * N;
    - ``scale``: C * N (beta_q * M_q, ``'scale'``);
    - ``fuse``: (S + 1) * C * C * N (1x1 conv, once) and ``norm``: 5 * C * N (``'concat'``).

    Returns:
        dict: ``params``, ``flops`` (total), ``paper_flops`` (:func:`dgmn_paper_flops`) and the per-component
        FLOPs (summed over rates).
    """
    H, W = hw_shape
    N, C, K, G = H * W, module.in_channels, module.num_nodes, module.groups
    P, S = module.num_pred_channels, len(module.dilations)
    ds, dw, da = module.dynamic_sampling, module.dynamic_weights, module.dynamic_affinity
    concat = module.fusion == 'concat'
    parts = dict(
        walk=S * C * 2 * K * K * N if (ds and not concat) else 0,
        sampling=S * 4 * C * K * N if ds else 0,
        pred=S * (C * P * K * N + (4 * C * K * N if (ds and P and not concat) else 0)),
        weight=S * G * K * N if (dw and da) else 0,
        message=S * C * K * N,
        scale=0 if concat else S * C * N,
        fuse=(S + 1) * C * C * N if concat else 0,
        norm=5 * C * N if concat else 0)
    return dict(params=sum(p.numel() for p in module.parameters()), flops=sum(parts.values()),
                paper_flops=dgmn_paper_flops(module, hw_shape), **parts)


def dgmn_paper_flops(module: nn.Module, hw_shape: Tuple[int, int]) -> int:
    """FLOPs of ``module`` (a :class:`DGMN`, run on an H x W map) in the convention of the DGMN papers.

    The paper's Table 2 FLOPs are the multiply-adds of the convolution *weights* on the map they run on
    (FLOPs / params = 9333, 9425, 9406 for its three DGMN rows, 9420 for its Deformable row, against
    97 x 97 = 9409 for the head map of a 769 crop at output stride 8): biases, norms, activations, the node
    sampling and the per-node dynamic filtering (the einsum over the K nodes) are not counted, as in the
    release's ``maskrcnn_benchmark/utils/compute_flop.py``, which hooks convolutions, linears, BN, ReLU and
    pooling only. So: the sum over every ``nn.Conv2d`` and ``mmcv.ops.DeformConv2d`` of
    weight.numel() * H * W (all the module's convs have stride 1 and 'same' padding). With C = 512 this gives
    the paper's 5.32 / 6.88 / 24.55 G for the three ``'concat'`` Table 2 configs (``docs/dgmn.md``).
    """
    H, W = hw_shape
    return sum(m.weight.numel() * H * W for m in module.modules() if isinstance(m, (nn.Conv2d, DeformConv2d)))


class record_dgmn_inputs:
    """Context manager: the (H, W) each :class:`DGMN` inside ``model`` sees during the enclosed forwards.

    Example::

        with record_dgmn_inputs(model) as shapes:
            model(x)
        report = dgmn_report(shapes)   # {module name: dgmn_complexity(...)}
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.shapes: Dict[str, Tuple[DGMN, Tuple[int, int]]] = {}
        self._handles = []

    def __enter__(self) -> Dict[str, Tuple['DGMN', Tuple[int, int]]]:
        for name, m in self.model.named_modules():
            if isinstance(m, DGMN):
                self._handles.append(m.register_forward_pre_hook(
                    lambda mod, args, name=name: self.shapes.__setitem__(name, (mod, tuple(args[0].shape[-2:])))))
        return self.shapes

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        return False


def dgmn_report(shapes: Dict[str, Tuple['DGMN', Tuple[int, int]]]) -> Dict[str, int]:
    """Totals over the recorded DGMN modules: ``modules``, ``params``, ``flops`` (ours, see
    :func:`dgmn_complexity`) and ``paper_flops`` (:func:`dgmn_paper_flops`)."""
    out = dict(modules=len(shapes), params=0, flops=0, paper_flops=0)
    for module, hw in shapes.values():
        c = dgmn_complexity(module, hw)
        for k in ('params', 'flops', 'paper_flops'):
            out[k] += c[k]
    return out

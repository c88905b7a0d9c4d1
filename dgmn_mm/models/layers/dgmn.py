"""DGMN: the dynamic graph message passing module (CVPR 2020; TPAMI 2022 Sec. 3.2-3.5).

"Dynamic Graph Message Passing Networks", L. Zhang, D. Xu, A. Arnab and P. H. S. Torr, CVPR 2020, and its
journal version (TPAMI 2022, Sec. 3 and 5). The module refines a feature map F (B, C, H, W) in one message
passing step (T = 1, Sec. 3.5)::

    H^(1) = F + sum_q beta_q * M_q                                                   (Eqs. 2, 3, 5)
    M_q[c, i] = sum_{k=1..K} A'^q_{i,k} * w^q_{g(c), i, k} * rho(F[c] | V, p_k(i), Delta d^q_{i,k})

for S sampling rates rho_q (``dilations``), K = kernel_size ** 2 nodes per rate, G filter groups
(``groups``; channel c uses the filter of group g(c) = c // (C / G), contiguous groups as in the release).
Per rate q:

1. *Uniform sampling* (Sec. 3.3, "US" in Fig. 2): the K nodes of a kernel_size x kernel_size grid dilated
   by rho_q around node i.
2. *Dynamic sampling* (DS, Eq. 4): walks Delta d^q = W^q v^q_i + b, a 3x3 conv with dilation rho_q over the
   uniformly sampled nodes (``walk_convs[q]``, no bias, as released); the new nodes are read with the bilinear
   sampler rho of Eq. 5 (:func:`~dgmn_mm.models.layers.node_sampling.sample_nodes`, DCNv1 rule).
3. *Dynamic filters and affinities* (DW, DA, Eqs. 6-7): ``{w^q, A'^q} = W^{k,A} v'^q_i``, a 3x3 conv over
   the sampled nodes (``filter_affinity_convs[q]``): a ``mmcv.ops.DeformConv2d`` fed with the same walks when
   DS is on (exactly the released ``kernel_conv``), a plain dilated ``nn.Conv2d`` otherwise. Its output
   channels are [G*K filter channels (group-major, g * K + k)] then [K affinity channels]; the affinities get
   a softmax over the K nodes (Eq. 7). No softmax on the filters (release ``deform='deformatt'``).

The three switches give the paper's Table 2 rows (Sec. 5.2):

=================  ===================  ===================  ====================================
config             ``dynamic_sampling``  ``dynamic_weights``  ``dynamic_affinity``
=================  ===================  ===================  ====================================
``base`` (3.2)     False                False                False
``w/ DA``          False                False                True
``w/ DA+DW``       False                True                 True
``w/ DA+DW+DS``    True                 True                 True   (full model, release default)
=================  ===================  ===================  ====================================

- ``dynamic_sampling=False``: the nodes are the fixed uniform dilated grid (Delta d = 0); no walk predictor.
- ``dynamic_weights=False``: w^q is a learned, *position-shared* filter of the same shape as the dynamic one,
  ``static_filters[q]`` of shape (G, K) (w_j^q of Eqs. 3/5, grouped as in Sec. 3.4), initialised to 1.
- ``dynamic_affinity=False``: A'^q_{i,k} = 1 / K (the fixed uniform neighbourhood of Sec. 3.2/3.3).
- ``base`` is therefore the plain multi-rate message passing of Sec. 3.2/3.3 with learned beta_q:
  ``H = F + sum_q beta_q * (1/K) * sum_k w^q_{g,k} F[p_k]``; at initialisation each message is the mean of
  the K uniformly sampled nodes. With DA on, at initialisation it is an affinity-weighted mean.
- ``filter_affinity_convs[q]`` exists when DW or DA is on and has ``G*K*DW + K*DA`` output channels.

The released code (``lzrobots/dgmn``, ``ReDynamicWeightsCat33``, see ``shared/specs/DGMN2.md`` sec. 10) is
the full model with ``dilations=(1, 4, 8, 12), groups=4``. Its 4th branch (rate index 3) takes the
affinities from the last K channels of the *filter* slice (the filter of group G-1) instead of the affinity
channels, which are computed but unused; ``release_branch4_bug=True`` reproduces that (off by default).
Release -> ours: ``off_conv{a,b,c,d}`` -> ``walk_convs.{0..3}``, ``kernel_conv{a..d}`` ->
``filter_affinity_convs.{0..3}``, ``gamma{1..4}`` -> ``beta[0..3]``; init as released (walk convs PyTorch
default, filter/affinity convs uniform(+-1/sqrt(9 C)), beta = 1, nothing zero-initialised).

Differences from the paper's equations, kept as released: no non-linearity sigma after the update (Eq. 2),
no bias in Eqs. 4 and 6, a single scalar beta_q per rate (Eq. 3) rather than a per-node alpha_i.
"""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.ops import DeformConv2d
from mmcv.ops.deform_conv import deform_conv2d
from mmengine.model import BaseModule
from torch import Tensor

from ...registry import MODELS
from .node_sampling import offsets_to_walk, sample_nodes


@MODELS.register_module()
class DGMN(BaseModule):
    """Dynamic graph message passing module (a ResNet plug-in and the context module of :class:`DGMNHead`).

    Input and output have the same shape (B, C, H, W); any H, W >= 1.

    As an mmdet/mmseg ResNet plug-in (``in_channels`` is filled in by ``build_plugin_layer``)::

        plugins=[dict(cfg=dict(type='DGMN', dilations=(1, 4, 8, 12), groups=4),
                      stages=(False, False, False, True), position='after_conv2')]

    Args:
        in_channels (int): C, must be divisible by ``groups``.
        dilations (Sequence[int]): the S sampling rates rho_q. Defaults to (1, 4, 8, 12) (COCO, release).
        groups (int): G, the number of dynamic filter groups. Defaults to 4.
        kernel_size (int): side of the uniformly sampled neighbourhood, K = kernel_size ** 2. Defaults to 3.
        dynamic_sampling (bool): DS, predict walks (Eq. 4) and sample bilinearly. Defaults to True.
        dynamic_weights (bool): DW, node-conditioned filters (Eq. 6); else position-shared learned filters.
            Defaults to True.
        dynamic_affinity (bool): DA, node-conditioned affinities with a softmax over the K nodes (Eqs. 6-7);
            else a fixed uniform affinity 1/K. Defaults to True.
        release_branch4_bug (bool): reproduce the released code's branch-4 affinity bug (see module doc).
            Needs DW, DA and at least 4 rates. Defaults to False.
        init_cfg (dict, optional): mmengine init config; by default the released initialisation is used.
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
                 release_branch4_bug: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if in_channels % groups:
            raise ValueError(f'in_channels ({in_channels}) must be divisible by groups ({groups})')
        if kernel_size % 2 != 1:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1:
            raise ValueError(f'dilations must be a non-empty sequence of positive ints, got {dilations}')
        if release_branch4_bug and not (dynamic_weights and dynamic_affinity and len(dilations) >= 4):
            raise ValueError('release_branch4_bug needs dynamic_weights, dynamic_affinity and >= 4 dilations')
        self.in_channels = in_channels
        self.dilations = dilations
        self.groups = groups
        self.kernel_size = kernel_size
        self.num_nodes = kernel_size * kernel_size  # K
        self.dynamic_sampling = dynamic_sampling
        self.dynamic_weights = dynamic_weights
        self.dynamic_affinity = dynamic_affinity
        self.release_branch4_bug = release_branch4_bug
        S, K, G, C = len(dilations), self.num_nodes, groups, in_channels
        pad = [(kernel_size - 1) // 2 * r for r in dilations]

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
        """Released initialisation: walk convs PyTorch default, W^{k,A} uniform(+-1/sqrt(C K)), beta = 1."""
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
        """Eq. 4 for rate q. x: (B, C, H, W) -> DCN-layout offsets (B, 2K, H, W), channel 2k = dy_k,
        2k+1 = dx_k.

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
        """Eqs. 6-7 for rate q.

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
        offset = self.predict_walks(x, q)
        nodes = self.sample(x, offset, q)  # (B, G, C / G, K, H, W)
        w, a = self.filters_and_affinities(x, offset, q)
        weight = w * a  # (B|1, G, K, H|1, W|1)
        if weight.shape[-1] == 1:  # static filters, fixed affinity: one (G, K) filter for every position
            weight = weight.expand(B, G, K, H, W)
        m = torch.einsum('bgrkhw,bgkhw->bgrhw', nodes, weight)
        return m.reshape(B, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) -> ``x + sum_q beta_q M_q`` (B, C, H, W)."""
        if x.shape[1] != self.in_channels:
            raise ValueError(f'expected {self.in_channels} channels, got input of shape {tuple(x.shape)}')
        out = x
        for q in range(len(self.dilations)):
            out = out + self.beta[q] * self.message(x, q)
        return out

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, dilations={self.dilations}, groups={self.groups}, '
                f'DS={self.dynamic_sampling}, DW={self.dynamic_weights}, DA={self.dynamic_affinity}, '
                f'release_branch4_bug={self.release_branch4_bug}')


# --------------------------------------------------------------------------------------------------------
# Complexity (what generic counters miss: DeformConv2d MACs and the bilinear sampling)
# --------------------------------------------------------------------------------------------------------
def dgmn_complexity(module: DGMN, hw_shape: Tuple[int, int]) -> Dict[str, int]:
    """Count the parameters and the multiply-accumulates of one :class:`DGMN` forward, analytically.

    Conventions (those of ``mmengine.analysis`` / fvcore and of OpenMMLab's ``get_flops``, and, judging by
    FLOPs ~= params x H x W, of the paper's Table 2): one multiply-add = one FLOP, per image (batch 1);
    a bilinear sample costs 4 per sampled value (the ``aten::grid_sampler`` rule of mmengine); softmax,
    additions and the uniform (integer-position) gather cost 0.

    Per rate, with N = H W, C channels, K nodes, G groups and P = ``num_pred_channels``:

    - ``walk``: C * 2K * K * N (DS only);
    - ``sampling``: 4 * C * K * N for the message nodes (DS only; a plain gather without DS);
    - ``pred``: C * P * K * N for W^{k,A}, plus 4 * C * K * N when it is a DeformConv2d (DS: the DCN
      resamples its input; the release does the same, DeformUnfold and DeformConv sample separately);
    - ``weight``: G * K * N for w * A' (when both are position-specific, i.e. DW and DA);
    - ``message``: C * K * N; ``scale``: C * N (beta_q * M_q).

    Returns:
        dict: ``params`` and ``flops`` totals and the per-component FLOPs (summed over rates).
    """
    H, W = hw_shape
    N, C, K, G = H * W, module.in_channels, module.num_nodes, module.groups
    P, S = module.num_pred_channels, len(module.dilations)
    ds = module.dynamic_sampling
    parts = dict(
        walk=S * C * 2 * K * K * N if ds else 0,
        sampling=S * 4 * C * K * N if ds else 0,
        pred=S * (C * P * K * N + (4 * C * K * N if (ds and P) else 0)),
        weight=S * G * K * N if (module.dynamic_weights and module.dynamic_affinity) else 0,
        message=S * C * K * N,
        scale=S * C * N)
    return dict(params=sum(p.numel() for p in module.parameters()), flops=sum(parts.values()), **parts)


# --------------------------------------------------------------------------------------------------------
# One module *before a residual block* (Table 3 "+DGMN": right before the last block of res4, as Non-local)
# --------------------------------------------------------------------------------------------------------
def _run_pre_block_plugin(block: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: feed ``block.pre_block_plugin(x)`` to the block instead of x."""
    return (block.pre_block_plugin(args[0]), ) + tuple(args[1:])


@MODELS.register_module(name='ResNetWithPreBlockPlugins')
def build_resnet_with_pre_block_plugins(resnet_type: str = 'mmdet.ResNet',
                                        pre_block_plugins: Sequence[dict] = (),
                                        **kwargs) -> nn.Module:
    """Build a ResNet (any registered ResNet-like backbone with ``res_layers``) and insert plug-ins on the
    *input* of chosen residual blocks, which mmdet's ``plugins`` (after_conv1/2/3, inside every block of a
    stage) cannot express.

    The plug-in becomes ``<layer>[<block>].pre_block_plugin`` and runs through a forward pre-hook, so all the
    backbone's own parameter names (and its pretrained checkpoints) are unchanged. Example, one DGMN right
    before the last residual block of res4 (Non-local placement, paper Table 3)::

        backbone=dict(type='ResNetWithPreBlockPlugins', resnet_type='mmdet.ResNet', depth=50, ...,
                      pre_block_plugins=[dict(cfg=dict(type='DGMN'), stage=2, block=-1)])

    Args:
        resnet_type (str): registry name of the backbone to build with ``**kwargs``.
        pre_block_plugins (Sequence[dict]): each ``dict(cfg=..., stage=i, block=j)``; ``in_channels`` is
            taken from the block's ``conv1``.
    """
    backbone = MODELS.build(dict(type=resnet_type, **kwargs))
    for plugin in pre_block_plugins:
        block = getattr(backbone, backbone.res_layers[plugin['stage']])[plugin['block']]
        if hasattr(block, 'pre_block_plugin'):
            raise ValueError(f'block {plugin["block"]} of stage {plugin["stage"]} already has a plug-in')
        block.add_module('pre_block_plugin',
                         MODELS.build(dict(plugin['cfg'], in_channels=block.conv1.in_channels)))
        block.register_forward_pre_hook(_run_pre_block_plugin)
    return backbone

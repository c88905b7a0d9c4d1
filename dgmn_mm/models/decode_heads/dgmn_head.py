"""DGMNHead: a Dilated-FCN head with the DGMN module between its two convs (paper Sec. 5.1, Table 2).

"For our experiments on Cityscapes, our DGMN module is randomly initialised and inserted between the 3x3
convolution layer and the final classifier" (TPAMI 2022 Sec. 5.1). As mmseg's ``NLHead`` and ``CCHead`` do for
their context modules, the module sits between ``convs[0]`` (3x3, in_channels -> channels) and ``convs[1]``
(3x3, channels -> channels) of an :class:`mmseg.models.decode_heads.FCNHead`; with mmseg's FCN settings
(``concat_input=True``) the head differs from ``FCNHead`` by the DGMN module only, so the "+Params / +FLOPs
over Dilated FCN" of Table 2 are those of the module (:func:`dgmn_mm.models.layers.dgmn.dgmn_complexity`).
"""
from typing import Optional, Sequence

import torch
from mmseg.models.decode_heads.fcn_head import FCNHead

from ...registry import MODELS
from ..layers.dgmn import DGMN, check_dgmn_args


@MODELS.register_module(force=True)  # replaces the lazy factory of decode_heads/__init__.py
class DGMNHead(FCNHead):
    """FCN head with a :class:`~dgmn_mm.models.layers.dgmn.DGMN` module on the ``channels``-wide feature.

    Args:
        dilations (Sequence[int]): sampling rates rho_q, positive ints. Defaults to (1, 6, 12, 24, 36)
            (Cityscapes, paper Sec. 5.1).
        groups (int): G dynamic filter groups, a positive divisor of ``channels``. Defaults to 4.
        dynamic_sampling (bool): DS switch of :class:`DGMN`. Defaults to True.
        dynamic_weights (bool): DW switch. Defaults to True.
        dynamic_affinity (bool): DA switch. Defaults to True.
        fusion (str): ``'scale'`` or ``'concat'`` (see :class:`DGMN`). Defaults to ``'scale'``; the
            Table 2 configs use ``'concat'``.
        release_branch4_bug (bool): see :class:`DGMN`. Defaults to False.
        fuse_norm_cfg (dict, optional): norm of the ``'concat'`` fusion (default GroupNorm(32)).
        **kwargs: :class:`FCNHead` / ``BaseDecodeHead`` arguments (``num_convs`` is fixed to 2).

    Shapes:
        - inputs: list of backbone maps; ``inputs[in_index]`` is (B, in_channels, H, W)
        - output: (B, num_classes, H, W)
    """

    def __init__(self,
                 dilations: Sequence[int] = (1, 6, 12, 24, 36),
                 groups: int = 4,
                 dynamic_sampling: bool = True,
                 dynamic_weights: bool = True,
                 dynamic_affinity: bool = True,
                 fusion: str = 'scale',
                 release_branch4_bug: bool = False,
                 fuse_norm_cfg: Optional[dict] = None,
                 **kwargs):
        num_convs = kwargs.pop('num_convs', 2)
        if num_convs != 2:
            raise ValueError(f'num_convs of DGMNHead must be 2 (the module sits between the two convs), '
                             f'got {num_convs!r}')
        channels = kwargs.get('channels')
        check_dgmn_args(channels if isinstance(channels, int) and not isinstance(channels, bool) and
                        channels > 0 else None, dilations, groups, 3, dynamic_sampling, dynamic_weights,
                        dynamic_affinity, fusion, release_branch4_bug, fuse_norm_cfg)
        super().__init__(num_convs=2, **kwargs)
        self.dgmn = DGMN(
            in_channels=self.channels,
            dilations=dilations,
            groups=groups,
            dynamic_sampling=dynamic_sampling,
            dynamic_weights=dynamic_weights,
            dynamic_affinity=dynamic_affinity,
            fusion=fusion,
            release_branch4_bug=release_branch4_bug,
            fuse_norm_cfg=fuse_norm_cfg)

    def _forward_feature(self, inputs):
        """inputs: list of backbone maps -> (B, channels, H, W) feature before ``cls_seg``."""
        x = self._transform_inputs(inputs)
        output = self.convs[0](x)
        output = self.dgmn(output)
        output = self.convs[1](output)
        if self.concat_input:
            output = self.conv_cat(torch.cat([x, output], dim=1))
        return output

    def forward(self, inputs):
        """Forward function."""
        return self.cls_seg(self._forward_feature(inputs))

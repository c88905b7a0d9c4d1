"""A parameter-free neck that brings every input map to one spatial size.

SETR's MLA head (``mmseg``'s ``SETRMLAHead``) upsamples each input by the same factor and concatenates the
results, so all its inputs must share one size. DGMN2 in the stride-8 mode (``strides=(4, 2, 1, 1)``) gives
stage 1 at stride 4 and stages 2-4 at stride 8; this neck resizes every map to the size of one reference
input (stage 2, stride 8, by default). Bilinear resizing with ``align_corners=False`` of an exactly 2x larger
map is the 2 x 2 average, so stage 1 is average-pooled to stride 8. It has no parameters, so the parameter
count of the model is that of the backbone plus the head, as in the paper's Table 11.
"""
from typing import Sequence, Tuple

import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from ...registry import MODELS


@MODELS.register_module()
class MultiLevelResize(BaseModule):
    """Resize all input maps to the spatial size of ``inputs[ref_index]``.

    Args:
        ref_index (int): index of the input whose (H, W) every output gets. Defaults to 1.
        mode (str): interpolation mode of ``F.interpolate``. Defaults to 'bilinear'.
        align_corners (bool): ``align_corners`` of ``F.interpolate``. Defaults to False.
    """

    def __init__(self, ref_index: int = 1, mode: str = 'bilinear', align_corners: bool = False,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.ref_index = ref_index
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        size = inputs[self.ref_index].shape[-2:]
        kwargs = {} if self.mode in ('nearest', 'area') else dict(align_corners=self.align_corners)
        return tuple(x if x.shape[-2:] == size else F.interpolate(x, size=size, mode=self.mode, **kwargs)
                     for x in inputs)

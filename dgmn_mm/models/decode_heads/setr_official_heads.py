"""The SETR heads of the official DGMN2 segmentation code, on mmseg 1.x's ``BaseDecodeHead``.

github:fudan-zvg/DGMN2 ``segmentation/decode_heads/vit_up_head.py`` (``VisionTransformerUpHead``, the Naive
and PUP heads) and ``vit_mla_head.py`` (``VIT_MLAHead``) differ from mmseg's ``SETRUPHead`` /
``SETRMLAHead`` in ways that change both the function and the parameter names, so official weights do not
load into the upstream heads:

* no input LayerNorm (mmseg's ``SETRUPHead`` has one);
* PUP: three 3x3 convs *with bias* (``conv_0``..``conv_2``) each followed by SyncBN (``syncbn_fc_*``), ReLU
  and x2 bilinear upsampling, then ``conv_seg`` and a fourth x2 upsampling (stride 8 -> 1/2: the logits are
  twice the crop size; training and testing resize them to the label / image size);
* Naive: ``conv_seg`` on the stage-4 map, then bilinear resizing to ``img_size`` (the crop);
* MLA: per level two 3x3 Conv-BN-ReLU (no bias) run at the level's own stride (stage 1 at stride 4), every
  branch resized to 4x the stride-8 size with ``align_corners=True``, concatenated, ``conv_seg``, then resized
  to ``img_size``.

The parameter names here are the official ones, so the official mmseg 0.16 checkpoints load strictly after
the backbone keys are renamed (``tools/model_converters/dgmn2_official_to_mm.py``). The official code sizes
its x2 / x4 resizes from the last dimension only (``size=x.shape[-1] * 2``, square maps); here both
dimensions are scaled, which is the same on the square 769x769 crops of the official recipe.
"""
from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead

from ...registry import MODELS


def _size(img_size):
    return (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)


@MODELS.register_module(force=True)  # replaces the lazy factory of decode_heads/__init__.py
class OfficialSETRUpHead(BaseDecodeHead):
    """Official DGMN2 SETR-Naive (``num_convs=0``) / SETR-PUP (``num_convs=3``) head.

    Args:
        img_size (int | tuple[int, int]): size the Naive head resizes its logits to (the training crop,
            769 in the official configs). Defaults to 769.
        num_convs (int): 0 (Naive) or 3 (PUP; the official ``num_conv=4``: three convs + ``conv_seg``).
        embed_dims (int): channels of the input map (the official ``embed_dim``). Defaults to 512.
        conv_channels (int): channels of the PUP convs. Defaults to 256.
        **kwargs: ``BaseDecodeHead`` arguments (``channels`` = input channels of ``conv_seg``).

    Shapes:
        input: the stage-4 map (B, embed_dims, H, W) at stride 8 -> logits (B, num_classes, *img_size)
        (Naive) or (B, num_classes, 16H, 16W) (PUP).
    """

    def __init__(self, img_size: Union[int, Sequence[int]] = 769, num_convs: int = 0, embed_dims: int = 512,
                 conv_channels: int = 256, **kwargs):
        super().__init__(**kwargs)
        if num_convs not in (0, 3):
            raise ValueError(f'num_convs must be 0 (SETR-Naive) or 3 (SETR-PUP), got {num_convs!r}')
        self.img_size = _size(img_size)
        self.num_convs = num_convs
        if num_convs == 3:
            if self.channels != conv_channels:
                raise ValueError(f'channels ({self.channels}) must equal conv_channels ({conv_channels}) in '
                                 'the PUP head: conv_seg follows the last conv')
            dims = [embed_dims, conv_channels, conv_channels, conv_channels]
            for i in range(3):
                self.add_module(f'conv_{i}', nn.Conv2d(dims[i], dims[i + 1], 3, padding=1))
                self.add_module(f'syncbn_fc_{i}', build_norm_layer(self.norm_cfg, dims[i + 1])[1])

    def _up2(self, x):
        return F.interpolate(x, size=(x.shape[-2] * 2, x.shape[-1] * 2), mode='bilinear',
                             align_corners=self.align_corners)

    def forward(self, inputs):
        x = self._transform_inputs(inputs)
        if self.num_convs == 0:
            x = self.cls_seg(x)
            return F.interpolate(x, size=self.img_size, mode='bilinear', align_corners=self.align_corners)
        for i in range(3):
            x = getattr(self, f'syncbn_fc_{i}')(getattr(self, f'conv_{i}')(x))
            x = self._up2(F.relu(x, inplace=True))
        return self._up2(self.cls_seg(x))


class MLABranches(nn.Module):
    """The official ``MLAHead``: ``head2`` .. ``head5``, two 3x3 Conv(no bias)-BN-ReLU per level."""

    def __init__(self, mla_channels: Sequence[int], mlahead_channels: int, norm_cfg: dict):
        super().__init__()
        for i, c in enumerate(mla_channels):
            self.add_module(f'head{i + 2}', nn.Sequential(
                nn.Conv2d(c, mlahead_channels, 3, padding=1, bias=False),
                build_norm_layer(norm_cfg, mlahead_channels)[1], nn.ReLU(),
                nn.Conv2d(mlahead_channels, mlahead_channels, 3, padding=1, bias=False),
                build_norm_layer(norm_cfg, mlahead_channels)[1], nn.ReLU()))
        self.num_levels = len(mla_channels)

    def forward(self, feats):
        # every branch to 4x the size of the second level (stride 8 -> 2), align_corners=True as in the
        # official code regardless of the head's setting
        size = (feats[1].shape[-2] * 4, feats[1].shape[-1] * 4)
        outs = [F.interpolate(getattr(self, f'head{i + 2}')(f), size=size, mode='bilinear', align_corners=True)
                for i, f in enumerate(feats)]
        return torch.cat(outs, dim=1)


@MODELS.register_module(force=True)  # replaces the lazy factory of decode_heads/__init__.py
class OfficialSETRMLAHead(BaseDecodeHead):
    """Official DGMN2 SETR-MLA head (``VIT_MLAHead``) on the four stage maps (strides 4, 8, 8, 8).

    Args:
        img_size (int | tuple[int, int]): size of the output logits. Defaults to 769.
        mla_channels (Sequence[int]): channels of the four stage maps. Defaults to (64, 128, 320, 512).
        mlahead_channels (int): channels of each branch. Defaults to 128.
        **kwargs: ``BaseDecodeHead`` arguments (``channels`` must be ``4 * mlahead_channels``).

    Shapes:
        inputs: four maps (B, C_i, H_i, W_i), the 2nd..4th of one size (H, W) -> (B, num_classes, *img_size).
    """

    def __init__(self, img_size: Union[int, Sequence[int]] = 769, mla_channels=(64, 128, 320, 512),
                 mlahead_channels: int = 128, **kwargs):
        kwargs.setdefault('in_channels', tuple(mla_channels))
        kwargs.setdefault('in_index', tuple(range(len(mla_channels))))
        kwargs.setdefault('input_transform', 'multiple_select')
        super().__init__(**kwargs)
        if self.channels != mlahead_channels * len(mla_channels):
            raise ValueError(f'channels ({self.channels}) must be {len(mla_channels)} x mlahead_channels '
                             f'({mlahead_channels * len(mla_channels)})')
        self.img_size = _size(img_size)
        self.mlahead = MLABranches(mla_channels, mlahead_channels, self.norm_cfg)

    def forward(self, inputs):
        x = self.mlahead(self._transform_inputs(inputs))
        x = self.cls_seg(x)
        return F.interpolate(x, size=self.img_size, mode='bilinear', align_corners=self.align_corners)

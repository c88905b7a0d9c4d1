# Mask R-CNN ResNeXt-101-64x4d-FPN 1x + DGMN (C5) (paper Table 5), sampling rates (1, 4, 8, 12), G = 4: the
# R-101 config with mmdet's ResNeXt-101-64x4d (the backbone of mmdet's mask-rcnn_x101-64x4d_fpn_1x_coco.py).
# The module works on the grouped-conv width (2048 channels in res5).
_base_ = './mask-rcnn_r101-dgmn-c5_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=64,
        base_width=4,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=True),
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnext101_64x4d')))

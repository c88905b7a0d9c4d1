# Mask R-CNN R-101-FPN 1x + DGMN (C5) (paper Table 5), sampling rates (1, 4, 8, 12), G = 4: the R-50 config
# with mmdet's ResNet-101 (the same override as mmdet's mask-rcnn_r101_fpn_1x_coco.py).
_base_ = './mask-rcnn_r50-dgmn-c5_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))

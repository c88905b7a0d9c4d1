# Mask R-CNN + DGMN2-Medium, COCO 1x (paper Table 8).
_base_ = './mask-rcnn_dgmn2-tiny_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        arch='medium',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_medium_mm.pth')))

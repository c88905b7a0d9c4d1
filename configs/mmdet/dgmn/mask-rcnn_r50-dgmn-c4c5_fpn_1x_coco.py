# Mask R-CNN R-50-FPN 1x + DGMN (C4, C5): DGMN after the 3x3 conv of every res4 and res5 bottleneck
# (paper Table 5), sampling rates (1, 4, 8, 12), G = 4.
_base_ = ['./mask-rcnn_r50-dgmn-c5_fpn_1x_coco.py']

model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='DGMN', dilations=(1, 4, 8, 12), groups=4),
            stages=(False, False, True, True),
            position='after_conv2')
    ]))

# RetinaNet + DGMN2-Large, COCO 1x (paper Table 7).
_base_ = './retinanet_dgmn2-tiny_fpn_1x_coco.py'
model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_large_mm.pth')))

# Deformable DETR + DGMN2-Small, COCO 50 epochs (paper Table 9).
_base_ = './deformable-detr_dgmn2-tiny_8xb2-50e_coco.py'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_small_mm.pth')))

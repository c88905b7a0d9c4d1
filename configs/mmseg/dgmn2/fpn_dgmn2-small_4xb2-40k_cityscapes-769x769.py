# Semantic FPN + DGMN2-Small on Cityscapes (paper Table 11).
_base_ = './fpn_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_small_mm.pth')))

# SETR-PUP + DGMN2-Large on Cityscapes (paper Table 11).
_base_ = './setr-pup_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py'
model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_large_mm.pth')))

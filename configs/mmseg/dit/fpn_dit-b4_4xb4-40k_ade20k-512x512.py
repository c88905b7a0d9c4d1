# Semantic FPN + DiT-B4 on ADE20K, the recipe of fpn_dit-b1_4xb4-40k_ade20k-512x512.py.
# Paper Table 5: 78.4 GFLOPs, 49.0 mIoU.
_base_ = './fpn_dit-b1_4xb4-40k_ade20k-512x512.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(
        arch='b4',
        init_cfg=dict(checkpoint='pretrained/dit-b4_in1k.pth')))

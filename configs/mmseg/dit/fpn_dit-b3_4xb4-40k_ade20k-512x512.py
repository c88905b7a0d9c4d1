# Semantic FPN + DiT-B3 on ADE20K, the recipe of fpn_dit-b1_4xb4-40k_ade20k-512x512.py.
# Paper Table 5: 59.0 GFLOPs, 48.7 mIoU.
_base_ = './fpn_dit-b1_4xb4-40k_ade20k-512x512.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(
        arch='b3',
        init_cfg=dict(checkpoint='pretrained/dit-b3_in1k.pth')))

# RetinaNet + DiT-B2, COCO 1x, the recipe of retinanet_dit-b1_fpn_1x_coco.py.
# Paper Table 4 (PVTv2-B2 / DiT-B2): 44.6/45.6 box AP.
_base_ = './retinanet_dit-b1_fpn_1x_coco.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(
        arch='b2',
        init_cfg=dict(checkpoint='pretrained/dit-b2_in1k.pth')))

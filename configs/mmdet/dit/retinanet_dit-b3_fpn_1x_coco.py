# RetinaNet + DiT-B3, COCO 1x, the recipe of retinanet_dit-b1_fpn_1x_coco.py.
# Paper Table 4 (PVTv2-B3 / DiT-B3): 45.9/46.8 box AP.
_base_ = './retinanet_dit-b1_fpn_1x_coco.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(
        arch='b3',
        init_cfg=dict(checkpoint='pretrained/dit-b3_in1k.pth')))

# RetinaNet + DiT-B4, COCO 1x, the recipe of retinanet_dit-b1_fpn_1x_coco.py.
# Paper Table 4 (PVTv2-B4 / DiT-B4): 46.1/46.9 box AP.
_base_ = './retinanet_dit-b1_fpn_1x_coco.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(
        arch='b4',
        init_cfg=dict(checkpoint='pretrained/dit-b4_in1k.pth')))

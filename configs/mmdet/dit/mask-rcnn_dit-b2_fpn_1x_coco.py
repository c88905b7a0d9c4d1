# Mask R-CNN + DiT-B2, COCO 1x, the recipe of mask-rcnn_dit-b1_fpn_1x_coco.py.
# Paper Table 4 (DiT-B2): box AP / mask AP = 46.4/42.2 (PVTv2-B2: 45.3 box AP).
_base_ = './mask-rcnn_dit-b1_fpn_1x_coco.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(
        arch='b2',
        init_cfg=dict(checkpoint='pretrained/dit-b2_in1k.pth')))

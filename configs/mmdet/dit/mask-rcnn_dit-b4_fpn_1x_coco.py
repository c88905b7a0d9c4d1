# Mask R-CNN + DiT-B4, COCO 1x, the recipe of mask-rcnn_dit-b1_fpn_1x_coco.py.
# Paper Table 4 (DiT-B4): box AP / mask AP = 48.2/43.3 (PVTv2-B4: 47.5 box AP).
_base_ = './mask-rcnn_dit-b1_fpn_1x_coco.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(
        arch='b4',
        init_cfg=dict(checkpoint='pretrained/dit-b4_in1k.pth')))

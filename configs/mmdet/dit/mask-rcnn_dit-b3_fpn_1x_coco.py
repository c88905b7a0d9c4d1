# Mask R-CNN + DiT-B3, COCO 1x, the recipe of mask-rcnn_dit-b1_fpn_1x_coco.py.
# Paper Table 4 (DiT-B3): box AP / mask AP = 48.0/41.7 (PVTv2-B3: 47.0 box AP).
_base_ = './mask-rcnn_dit-b1_fpn_1x_coco.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(
        arch='b3',
        init_cfg=dict(checkpoint='pretrained/dit-b3_in1k.pth')))

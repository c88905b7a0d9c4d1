# Mask R-CNN + DiT-B4, COCO 3x + multi-scale training, the recipe of mask-rcnn_dit-b2_fpn_ms-640-800-3x_coco.py.
# Paper Table 3: 49.4 box / 44.0 mask AP, 465 GFLOPs at 1280x800.
_base_ = './mask-rcnn_dit-b2_fpn_ms-640-800-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b4',
        init_cfg=dict(checkpoint='pretrained/dit-b4_in1k.pth')))

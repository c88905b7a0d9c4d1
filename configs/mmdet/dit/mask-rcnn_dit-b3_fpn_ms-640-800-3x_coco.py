# Mask R-CNN + DiT-B3, COCO 3x + multi-scale training, the recipe of mask-rcnn_dit-b2_fpn_ms-640-800-3x_coco.py.
# Paper Table 3: 48.8 box / 43.7 mask AP, 369 GFLOPs at 1280x800.
_base_ = './mask-rcnn_dit-b2_fpn_ms-640-800-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b3',
        init_cfg=dict(checkpoint='pretrained/dit-b3_in1k.pth')))

# RetinaNet + DiT-B3, COCO 3x + multi-scale training, the recipe of retinanet_dit-b2_fpn_ms-640-800-3x_coco.py.
# Paper Table 3: 47.6 box AP, 355 GFLOPs at 1280x800.
_base_ = './retinanet_dit-b2_fpn_ms-640-800-3x_coco.py'

model = dict(
    backbone=dict(
        arch='b3',
        init_cfg=dict(checkpoint='pretrained/dit-b3_in1k.pth')))

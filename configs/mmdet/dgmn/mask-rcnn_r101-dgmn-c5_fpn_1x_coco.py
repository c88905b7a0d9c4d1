# Mask R-CNN R-101-FPN 1x + DGMN (C5) (paper Table 5), sampling rates (1, 4, 8, 12), G = 4.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r101_fpn_1x_coco.py']
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(plugins=[
        dict(
            cfg=dict(type='DGMN', dilations=(1, 4, 8, 12), groups=4),
            stages=(False, False, False, True),
            position='after_conv2')
    ]))

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

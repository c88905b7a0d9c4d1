# Mask R-CNN + DGMN2-Tiny, COCO 1x (paper Table 8: 31.8M params, 40.1 box / 37.2 mask AP).
# The official recipe (github:fudan-zvg/DGMN2 detection/configs/*_8x2_1x_coco.py, mmdet 2.12): 8 GPUs x 2 images, AdamW lr 1e-4 wd 1e-4, 12 epochs, steps at 8 and
# 11, linear warm-up 500 iters from 0.001, single-scale 1333x800 with flip.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='DGMN2',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_tiny_mm.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

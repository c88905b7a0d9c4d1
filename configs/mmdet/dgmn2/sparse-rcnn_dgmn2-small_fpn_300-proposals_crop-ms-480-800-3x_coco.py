# Sparse R-CNN + DGMN2-Small, 300 proposals, multi-scale 480-800 with crop, 3x (paper Table 10: 102.6M
# params, 48.2 box AP). Recipe (shared/specs/DGMN2.md sec. 8, detectron2 in the DGMN2 repo): 16 images,
# AdamW lr 2.5e-5 wd 1e-4, full-model grad clip 1.0 (the upstream base), 36 epochs (~270k iters), steps at 27
# and 33, warm-up 1000 iters from 0.01 (the official value; upstream uses 500 from 0.001).
_base_ = 'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_300-proposals_crop-ms-480-800-3x_coco.py'
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='DGMN2',
        arch='small',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_small_mm.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))

param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1)
]

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

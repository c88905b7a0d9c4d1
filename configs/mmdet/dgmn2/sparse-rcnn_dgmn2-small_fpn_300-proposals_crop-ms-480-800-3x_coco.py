# Sparse R-CNN + DGMN2-Small, 300 proposals, multi-scale 480-800 with crop, 3x (paper Table 10: 102.6M
# params, 48.2 box AP). The official recipe (github:fudan-zvg/DGMN2 sparsercnn/configs/
# sparsercnn.dgmn2small.300pro.3x.yaml on Base-SparseRCNN.yaml, detectron2): 16 images, AdamW lr 2.5e-5 wd 1e-4,
# full-model grad clip 1.0, 270k iterations with steps at 210k and 250k (iteration-based, as detectron2; about
# 36.5 epochs, steps at 28.4 and 33.8), warm-up 1000 iterations from 0.01, images without boxes kept
# (FILTER_EMPTY_ANNOTATIONS: False), evaluation every 5000 iterations, no stochastic depth (the official
# backbone wrapper leaves drop_path_rate at 0).
_base_ = 'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_300-proposals_crop-ms-480-800-3x_coco.py'
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='DGMN2',
        arch='small',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_small_mm.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))

train_dataloader = dict(
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(filter_cfg=dict(filter_empty_gt=False, min_size=32)))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=270000, val_interval=5000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=270000, by_epoch=False, milestones=[210000, 250000], gamma=0.1)
]
log_processor = dict(by_epoch=False)

# crash-safe checkpoints (atomic save, old checkpoints deleted last), every evaluation
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=5000),
    logger=dict(log_metric_by_epoch=False))

# DGMN2-Tiny Semantic FPN on the synthetic Cityscapes-style maps (no download).
#
#   python tools/make_demo_data.py --out data/demo      # writes data/demo/cityscapes (and coco, imagenet)
#   python tools/train.py configs/mmseg/demo/fpn_dgmn2-tiny_synthetic.py
#
# 32 train / 8 val images of 256 x 128 px: sky (10) / building (2) / road (0) bands with shapes labelled
# traffic light (6), traffic sign (7), person (11) and car (13) - mmseg's 19 Cityscapes train ids, so
# CityscapesDataset reads them unchanged (classes absent from the data give NaN IoU and are skipped).
# The backbone is trained from scratch; a short AdamW schedule for a smoke-size CPU run.
_base_ = ['mmseg::sem_fpn/fpn_r50_4xb2-80k_cityscapes-512x1024.py']

custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

crop_size = (128, 256)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True, type='DGMN2', arch='tiny', out_indices=(0, 1, 2, 3), norm_cfg=dict(type='BN')),
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=128),
    decode_head=dict(in_channels=[128, 128, 128, 128], channels=64, norm_cfg=norm_cfg))

dataset_type = 'CityscapesDataset'
data_root = 'data/demo/cityscapes/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1, persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root,
                 data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 200
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
optim_wrapper = dict(
    _delete_=True, type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=20, end=max_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
work_dir = './work_dirs/demo_seg'

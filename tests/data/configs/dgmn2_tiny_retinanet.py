# A tiny mmdet RetinaNet with a DGMN2 backbone (tests/test_engine/test_engine_setup.py writes real mmdet checkpoints with it).
# Data: a COCO-style json + image folder the test writes; point `data_root` at it with cfg options.
default_scope = 'mmdet'
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

tiny_arch = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 1, 1, 2),
                 mlp_ratios=(2, 2, 2, 2))
model = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_size_divisor=32),
    backbone=dict(type='DGMN2', arch=tiny_arch, out_indices=(1, 2, 3), norm_cfg=dict(type='SyncBN')),
    neck=dict(type='FPN', in_channels=[32, 32, 64], out_channels=16, start_level=0, num_outs=3),
    bbox_head=dict(
        type='RetinaHead', num_classes=2, in_channels=16, stacked_convs=1, feat_channels=16,
        anchor_generator=dict(type='AnchorGenerator', octave_base_scale=4, scales_per_octave=1,
                              ratios=[1.0], strides=[8, 16, 32]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0] * 4, target_stds=[1.0] * 4),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0,
                                 ignore_iof_thr=-1),
                   sampler=dict(type='PseudoSampler'), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(nms_pre=100, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=10))

data_root = 'data/tiny_coco/'
metainfo = dict(classes=('a', 'b'), palette=[(220, 20, 60), (119, 11, 32)])
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                  dict(type='PackDetInputs')]
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type='CocoDataset', data_root=data_root, metainfo=metainfo, ann_file='ann.json',
                 data_prefix=dict(img='img/'), filter_cfg=dict(filter_empty_gt=True, min_size=0),
                 pipeline=train_pipeline))
val_dataloader = val_cfg = val_evaluator = None
test_dataloader = test_cfg = test_evaluator = None

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=1e-4))
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2),
                   dict(type='MultiStepLR', by_epoch=True, milestones=[1], gamma=0.1)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
auto_scale_lr = dict(enable=False, base_batch_size=2)

default_hooks = dict(timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval=1),
                     param_scheduler=dict(type='ParamSchedulerHook'),
                     checkpoint=dict(type='AtomicCheckpointHook', interval=1),
                     sampler_seed=dict(type='DistSamplerSeedHook'),
                     visualization=dict(type='DetVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
visualizer = dict(type='DetLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')], name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False

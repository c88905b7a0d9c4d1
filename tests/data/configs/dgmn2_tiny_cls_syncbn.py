# A tiny mmpretrain classifier with a DGMN2 backbone for the tool tests (tests/test_tools/test_train_test_tools.py).
# `SyncBN` and `dist_cfg.backend='nccl'` are on purpose: on a CPU-only machine the tools must turn them
# into BN and gloo. The data roots are placeholders: the tests point them at a random image folder with
# --cfg-options train_dataloader.dataset.data_root=... (same for val/test).
default_scope = 'mmpretrain'
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

tiny_arch = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 1, 1, 2),
                 mlp_ratios=(2, 2, 2, 2))
model = dict(
    type='ImageClassifier',
    backbone=dict(type='DGMN2', arch=tiny_arch, out_indices=(3, ), norm_cfg=dict(type='SyncBN')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=2, in_channels=64,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )))
data_preprocessor = dict(num_classes=2, mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], to_rgb=True)

data_root = 'data/tiny_folder'
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val', pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=2, by_epoch=True, begin=0, end=2)]
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=4)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='VisualizationHook', enable=False))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='UniversalVisualizer', vis_backends=vis_backends)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)

# DGMN2-Tiny image classifier on the synthetic ImageNet-style class folder (no download).
#
#   python tools/make_demo_data.py --out data/demo      # writes data/demo/imagenet/{train,val}/<shape>/
#   python tools/train.py configs/mmpretrain/demo/dgmn2-tiny_synthetic.py
#
# 4 classes (circle, square, triangle, star), 40 train / 10 val images per class, 64 x 64 px, read by
# mmpretrain's CustomDataset from the folder layout. Trained from scratch with a short AdamW schedule.
_base_ = ['mmpretrain::_base_/default_runtime.py']

custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

classes = ('circle', 'square', 'star', 'triangle')  # CustomDataset sorts the folder names
model = dict(
    type='ImageClassifier',
    backbone=dict(type='DGMN2', arch='tiny', out_indices=(3, ), norm_cfg=dict(type='BN')),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=len(classes), in_channels=512,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, )))

data_preprocessor = dict(
    num_classes=len(classes), mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)
dataset_type = 'CustomDataset'
data_root = 'data/demo/imagenet/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=16, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val', pipeline=test_pipeline))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_dataloader = val_dataloader
test_evaluator = val_evaluator

max_epochs = 10
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, end=max_epochs),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type='AtomicCheckpointHook', interval=max_epochs, max_keep_ckpts=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
work_dir = './work_dirs/demo_cls'

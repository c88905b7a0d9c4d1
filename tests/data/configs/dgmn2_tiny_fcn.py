# A tiny mmseg FCN with a DGMN2 backbone (tests/test_engine/test_engine_setup.py writes real mmseg checkpoints with it).
# Data: img/ and ann/ folders of .png files the test writes; point `data_root` at them with cfg options.
default_scope = 'mmseg'
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

tiny_arch = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 1, 1, 2),
                 mlp_ratios=(2, 2, 2, 2))
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3, bgr_to_rgb=True,
                           pad_val=0, seg_pad_val=255, size=(32, 32)),
    backbone=dict(type='DGMN2', arch=tiny_arch, out_indices=(3, ), norm_cfg=norm_cfg),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                     concat_input=False, dropout_ratio=0.1, num_classes=2, norm_cfg=norm_cfg,
                     align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

data_root = 'data/tiny_seg/'
metainfo = dict(classes=('background', 'thing'), palette=[[0, 0, 0], [255, 255, 255]])
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'), dict(type='PackSegInputs')]
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.png',
                 seg_map_suffix='.png', data_prefix=dict(img_path='img', seg_map_path='ann'),
                 pipeline=train_pipeline))
val_dataloader = val_cfg = val_evaluator = None
test_dataloader = test_cfg = test_evaluator = None

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=5e-4),
                     clip_grad=None)
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=4, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=2)

default_hooks = dict(timer=dict(type='IterTimerHook'), logger=dict(type='LoggerHook', interval=1),
                     param_scheduler=dict(type='ParamSchedulerHook'),
                     checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=2),
                     sampler_seed=dict(type='DistSamplerSeedHook'),
                     visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')], name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

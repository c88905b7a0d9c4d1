# DiT-B1 (our reconstruction of arXiv 2308.03409) on ImageNet-1k, the DeiT recipe: 8 GPUs x 128 images,
# AdamW lr 5e-4 x 1024 / 512 = 1e-3, wd 0.05, cosine, 300 epochs (5 warm-up), RandAugment, Mixup 0.8,
# CutMix 1.0, label smoothing 0.1, random erasing 0.25, 224 crops.
# Paper Table 1: 30.3M params, 2.0 GFLOPs, 79.9 top-1. Ours: 30.28M params; 7.89 GFLOPs with every gate open,
# so mu = 2.0 / 7.89 = 0.253 (the budget is relative to the all-open FLOPs, see docs/dit.md).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',  # RandAugment m9 mstd0.5, erasing 0.25
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

# 300 epochs x 1251 iters (1281167 / 1024); the budget weight lambda_C ramps up over the first 5%
budget_warmup_iters = 18765

model = dict(
    type='DiTImageClassifier',  # ImageClassifier + loss_budget (Eqs. 6-7)
    budget_loss=dict(type='DiTBudgetLoss', mu=0.253, loss_weight=2.0, warmup_iters=budget_warmup_iters,
                     base='dense', reduction='image'),
    backbone=dict(
        type='DiT',
        arch='b1',
        out_indices=(3, ),
        drop_path_rate=0.1,
        row_gate='learned',
        col_gate='learned',
        gate_momentum=0.999),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0, _delete_=True),
    clip_grad=None,
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'))
auto_scale_lr = dict(base_batch_size=1024)

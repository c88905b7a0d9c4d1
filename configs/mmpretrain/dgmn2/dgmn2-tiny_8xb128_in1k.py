# DGMN2-Tiny on ImageNet-1k: the official recipe (github:fudan-zvg/DGMN2 classification/main.py, DeiT-derived),
# 8 GPUs x 128 images.
# Paper Table 6: 12.1M params, 2.3 GFLOPs, 78.7 top-1.
_base_ = [
    '../_base_/models/deit-head_512_in1k.py',  # GAP + linear head, label smoothing 0.1, Mixup / CutMix
    '../_base_/datasets/imagenet_bs128_swin_224.py',  # RandAugment m9 mstd0.5, erasing 0.25, bicubic, 128/GPU
    '../_base_/schedules/imagenet_bs1024_adamw_deit.py',  # AdamW lr 1e-3 wd 0.05, 300 epochs
    '../_base_/default_runtime.py',  # imports dgmn_mm, crash-safe checkpoints
]

model = dict(
    backbone=dict(
        type='DGMN2',
        arch='tiny',
        out_indices=(3, ),
        drop_path_rate=0.1,
        norm_cfg=dict(type='BN')))  # per-GPU BN in the patch embeddings: the official trainer has no SyncBN

# 8 GPUs x 128 images, repeated augmentation as in the official trainer
train_dataloader = dict(sampler=dict(type='RepeatAugSampler', shuffle=True))

# Optimizer of the base: AdamW lr 5e-4 x 1024 / 512 = 1e-3, wd 0.05, no decay on norms and biases (1-D
# parameters); the RelPos tables are 2-D and do get weight decay, as in the official trainer. No gradient
# clipping. The official trainer runs in mixed precision (torch.cuda.amp autocast + dynamic loss scaling):
# train with `tools/dist_train.sh CONFIG 8 --amp` for that (mmengine's AmpOptimWrapper needs a GPU, so the
# config itself stays fp32 and also runs on a CPU).

# Instead of the base's DeiT schedule, timm's cosine scheduler as the official trainer steps it: once per epoch, lr(e) = 1e-6 + e (1e-3 - 1e-6) / 5
# for the 5 warm-up epochs, then 1e-5 + (1e-3 - 1e-5) (1 + cos(pi e / 300)) / 2 (the cosine phase counts
# from epoch 0, through the warm-up). mmengine chains the two schedulers over epochs 0-5: from epoch 5 on the
# lr is timm's within 0.001 % of the peak lr, in the warm-up within 0.04 % (tests/test_configs/test_official_recipes.py).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=6),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=0, end=300),
]

# The official trainer runs epochs 0-99 without stochastic depth and switches it on at epoch 100.
custom_hooks = [dict(type='DropPathScheduleHook', start_epoch=100)]

# DiT-B1 (our reconstruction of arXiv 2308.03409) on ImageNet-1k, the DeiT recipe: 8 GPUs x 128 images,
# AdamW lr 5e-4 x 1024 / 512 = 1e-3, wd 0.05, cosine, 300 epochs (5 warm-up), RandAugment, Mixup 0.8,
# CutMix 1.0, label smoothing 0.1, random erasing 0.25, 224 crops.
# Paper Table 1: 30.3M params, 2.0 GFLOPs, 79.9 top-1. Ours: 30.28M params; 7.89 GFLOPs with every gate open,
# so mu = 2.0 / 7.89 = 0.253 (the budget is relative to the all-open FLOPs, see docs/dit.md).
_base_ = [
    '../_base_/models/deit-head_512_in1k.py',  # GAP + linear head, label smoothing 0.1, Mixup / CutMix
    '../_base_/datasets/imagenet_bs128_swin_224.py',  # RandAugment m9 mstd0.5, erasing 0.25, 128/GPU
    '../_base_/schedules/imagenet_bs1024_adamw_deit.py',  # AdamW lr 1e-3 wd 0.05, 5 + 295 epochs cosine
    '../_base_/default_runtime.py',  # imports dgmn_mm, crash-safe checkpoints
]

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
        gate_momentum=0.999))

# DGMN2-Tiny fine-tuning on ImageNet-1k with layer-wise lr decay (a template, not a recipe of the paper).
# Starts from ImageNet weights (an official checkpoint converted by
# tools/model_converters/dgmn2_official_to_mm.py); the lr of a parameter at depth l (DGMN2.get_layer_depth:
# stem 0, blocks 1..8, head 9 of num_layers 10) is lr * layer_decay_rate ** (9 - l), i.e. the head trains at
# 1e-4 and the stem at 1e-4 * 0.85^9 = 2.3e-5. Adapt the data settings (e.g. a downstream dataset) as needed.
_base_ = ['./dgmn2-tiny_8xb128_in1k.py']

load_from = 'pretrained/dgmn2_tiny_mm.pth'  # the whole classifier (backbone and head)

train_dataloader = dict(batch_size=64)
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.85, norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0,
                       _delete_=True),
    clip_grad=dict(_delete_=True, max_norm=5.0),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=2, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=2, end=30),
]
train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=1)
custom_hooks = []  # stochastic depth from the start (the backbone's drop_path_rate), no delayed switch
auto_scale_lr = dict(base_batch_size=512)

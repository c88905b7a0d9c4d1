# The DeiT recipe's optimisation for a batch of 1024 (8 GPUs x 128), used by DGMN2 (github:fudan-zvg/DGMN2
# classification/main.py, DeiT-derived) and DiT (DiT paper Sec. 4.1): AdamW lr 5e-4 x 1024 / 512 = 1e-3,
# wd 0.05, no weight decay on norms and biases (1-D parameters), no gradient clipping; 300 epochs, linear
# warm-up over 5 epochs from lr x 1e-3, cosine to 1e-5. mmpretrain's Swin schedule with those values.
_base_ = 'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py'

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
auto_scale_lr = dict(base_batch_size=1024)

# mmseg's 40k-iteration schedule with AdamW lr 1e-4, weight decay 1e-4, no gradient clipping and poly decay
# (power 0.9) to 0: the segmentation recipe of the transformer backbones (official DGMN2
# segmentation/configs/_base_/schedules/schedule_40k.py and model configs, github:fudan-zvg/DGMN2; DiT paper
# Sec. 4.3). Crash-safe checkpoints (AtomicCheckpointHook: atomic save, old checkpoints deleted last);
# interval and max_keep_ckpts stay mmseg's.
_base_ = 'mmseg::_base_/schedules/schedule_40k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)
]

default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

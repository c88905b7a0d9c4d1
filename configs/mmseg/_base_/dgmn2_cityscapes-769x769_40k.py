# The official DGMN2 Cityscapes recipe shared by the Semantic FPN and SETR configs (github:fudan-zvg/DGMN2
# segmentation/configs/_base_/{datasets/cityscapes_769x769,schedules/schedule_40k}.py and the model configs):
# Cityscapes 769x769 crops (resize 2049x1025, ratio 0.5-2.0), 4 GPUs x 2 images, 40k iterations, AdamW
# lr 1e-4 wd 1e-4, poly 0.9 to 0, SyncBN, slide test 769 / stride 513, no auxiliary heads.
_base_ = [
    'mmseg::_base_/datasets/cityscapes_769x769.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.0001),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)
]
train_dataloader = dict(batch_size=2, num_workers=2)

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

# Mask R-CNN + DiT-B1 (our reconstruction of arXiv 2308.03409), COCO 1x. Paper Table 4: 42.9 box / 39.9 mask AP.
# Recipe (paper Sec. 4.2): 8 GPUs x 2 images, AdamW lr 1e-4 wd 1e-4, 12 epochs, 1333x800, ImageNet
# pre-trained backbone (the checkpoint written by configs/mmpretrain/dit/dit-b1_8xb128_in1k.py).
# The budget loss keeps the classification ratio mu of the all-open FLOPs [R]; lambda_C ramps over the
# first 5% of the 12 x 7330 iterations.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

model = dict(
    type='DiTMaskRCNN',  # MaskRCNN + loss_budget (Eqs. 6-7)
    budget_loss=dict(type='DiTBudgetLoss', mu=0.253, loss_weight=2.0, warmup_iters=4398),
    backbone=dict(
        _delete_=True,
        type='DiT',
        arch='b1',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dit-b1_in1k.pth', prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

# Mask R-CNN + DiT-B2, COCO 3x schedule + multi-scale training (paper Table 3: 48.9 box / 43.7 mask AP (PVTv2-B2: 47.8 / 42.9), 290 GFLOPs at 1280x800).
# Recipe (paper Sec. 4.2): the 1x recipe of mask-rcnn_dit-b2_fpn_1x_coco.py (8 GPUs x 2 images, AdamW lr 1e-4,
# wd 1e-4) for 36 epochs (lr x0.1 at epochs 27 and 33), the shorter side drawn from [640, 800] (longer side
# <= 1333) in training, 800 at test. lambda_C of the budget ramps over the first 5% of 36 x 7330 iterations.
_base_ = './mask-rcnn_dit-b2_fpn_1x_coco.py'

model = dict(budget_loss=dict(warmup_iters=13194))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=[(1333, 640), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]

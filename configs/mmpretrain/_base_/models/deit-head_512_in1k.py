# The classifier of the DeiT recipe on a 512-channel last-stage map (every DGMN2 and DiT size ends with 512
# channels): global average pooling, a linear head to the 1000 ImageNet classes (truncated-normal init,
# std 0.02) trained with label smoothing 0.1, and Mixup 0.8 / CutMix 1.0 on the training batches, as the
# official DGMN2 trainer (github:fudan-zvg/DGMN2 classification/main.py, DeiT-derived) and the DiT paper
# (Sec. 4.1, "the setting of DeiT"). The configs add the backbone.
model = dict(
    type='ImageClassifier',
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02, bias=0.)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

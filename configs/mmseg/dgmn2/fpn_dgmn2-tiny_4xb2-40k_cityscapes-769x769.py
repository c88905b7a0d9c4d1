# Semantic FPN + DGMN2-Tiny on Cityscapes (paper Table 11: 15.84M params, 78.09 mIoU).
# The official fpn_dgmn2_tiny_4x2_769x769_40k_cityscapes.py: the backbone in its pyramid mode (strides
# 4/8/16/32, the official output='neck'); FPN 4 levels of 256, FPNHead 128 channels, dropout 0.1,
# align_corners=True; no stochastic depth (the official segmentation backbone leaves drop_path_rate at 0).
_base_ = ['mmseg::_base_/models/fpn_r50.py', '../_base_/dgmn2_cityscapes-769x769_40k.py']

crop_size = (769, 769)
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DGMN2',
        arch='tiny',
        strides=(4, 2, 2, 2),
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg,
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_tiny_mm.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(norm_cfg=norm_cfg, align_corners=True),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)))

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

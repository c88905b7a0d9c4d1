# Semantic FPN + DGMN2-Tiny on Cityscapes (paper Table 11: 15.84M params, 78.09 mIoU).
# Recipe (shared/specs/DGMN2.md sec. 8): Cityscapes 769x769 crops (resize 2049x1025, ratio 0.5-2.0), 4 GPUs x 2
# images, 40k iters, AdamW lr 1e-4 wd 1e-4, poly 0.9 to 0, SyncBN, slide test 769 / stride 513, no
# auxiliary heads.
# The backbone in its pyramid mode (strides 4/8/16/32); FPN 4 levels of 256, FPNHead 128 channels.
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
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_tiny_mm.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(norm_cfg=norm_cfg, align_corners=True),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)))

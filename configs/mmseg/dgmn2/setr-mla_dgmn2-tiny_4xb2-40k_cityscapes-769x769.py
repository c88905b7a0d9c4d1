# SETR-MLA head + DGMN2-Tiny on Cityscapes (paper Table 11: 13.37M params, 78.25 mIoU).
# Recipe (shared/specs/DGMN2.md sec. 8): Cityscapes 769x769 crops (resize 2049x1025, ratio 0.5-2.0), 4 GPUs x 2
# images, 40k iters, AdamW lr 1e-4 wd 1e-4, poly 0.9 to 0, SyncBN, slide test 769 / stride 513, no
# auxiliary heads.
# The backbone in the stride-8 mode (strides (4, 2, 1, 1)) returns all four stages (strides 4/8/8/8);
# the parameter-free MultiLevelResize neck brings stage 1 to the stride-8 size (SETRMLAHead needs equal
# sizes); SETRMLAHead takes the stage maps directly: per level two 3x3 Conv-BN-ReLU of 128 channels, x4
# upsampling, concatenation, conv_seg (as the official 'decode_head_multi' head; no MLA neck).
_base_ = ['mmseg::_base_/models/setr_mla.py', '../_base_/dgmn2_cityscapes-769x769_40k.py']

crop_size = (769, 769)
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DGMN2',
        arch='tiny',
        strides=(4, 2, 1, 1),
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_tiny_mm.pth')),
    neck=dict(_delete_=True, type='MultiLevelResize', ref_index=1),
    decode_head=dict(
        in_channels=(64, 128, 320, 512),
        channels=512,
        mla_channels=128,
        up_scale=4,
        dropout_ratio=0,
        norm_cfg=norm_cfg),
    auxiliary_head=None,
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)))

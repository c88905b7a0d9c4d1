# SETR-Naive head + DGMN2-Tiny on Cityscapes (paper Table 11: 11.60M params, 77.23 mIoU).
# Recipe (shared/specs/DGMN2.md sec. 8): Cityscapes 769x769 crops (resize 2049x1025, ratio 0.5-2.0), 4 GPUs x 2
# images, 40k iters, AdamW lr 1e-4 wd 1e-4, poly 0.9 to 0, SyncBN, slide test 769 / stride 513, no
# auxiliary heads.
# The backbone in the stride-8 mode (strides (4, 2, 1, 1): stages 3-4 stay at stride 8, same weights);
# the naive head is SETR's: input LayerNorm, 1x1 conv_seg on the stage-4 map, bilinear upsampling to the
# label size (mmseg's SETRUPHead with num_convs=0).
_base_ = ['mmseg::_base_/models/setr_naive.py', '../_base_/dgmn2_cityscapes-769x769_40k.py']

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
        out_indices=(3, ),
        norm_cfg=norm_cfg,
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_tiny_mm.pth')),
    decode_head=dict(
        in_channels=512,
        channels=512,
        in_index=0,
        num_convs=0,
        dropout_ratio=0,
        norm_cfg=norm_cfg),
    auxiliary_head=None,
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)))

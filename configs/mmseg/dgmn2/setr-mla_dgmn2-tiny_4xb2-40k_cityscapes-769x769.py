# SETR-MLA + DGMN2-Tiny on Cityscapes (paper Table 11: 13.37M params, 78.25 mIoU), the official
# setr_mla_dgmn2_tiny_4x2_769x769_40k_cityscapes.py ('decode_head_multi'): the backbone returns all four
# stages (strides 4/8/8/8); per stage two 3x3 Conv-BN-ReLU of 128 channels at the stage's own stride, every
# branch resized to 4x the stride-8 size (align_corners=True), concatenated (512), conv_seg, resized to the
# 769 crop. No MLA neck.
_base_ = ['../_base_/dgmn2_setr.py']
model = dict(
    backbone=dict(out_indices=(0, 1, 2, 3)),
    decode_head=dict(
        _delete_=True,
        type='OfficialSETRMLAHead',
        in_channels=(64, 128, 320, 512),
        in_index=(0, 1, 2, 3),
        input_transform='multiple_select',
        channels=512,
        img_size=769,
        mla_channels=(64, 128, 320, 512),
        mlahead_channels=128,
        num_classes=19,
        dropout_ratio=0,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))

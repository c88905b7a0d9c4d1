# SETR-PUP head + DGMN2-Tiny on Cityscapes (paper Table 11: 13.95M params, 78.25 mIoU).
# Recipe (shared/specs/DGMN2.md sec. 8): Cityscapes 769x769 crops (resize 2049x1025, ratio 0.5-2.0), 4 GPUs x 2
# images, 40k iters, AdamW lr 1e-4 wd 1e-4, poly 0.9 to 0, SyncBN, slide test 769 / stride 513, no
# auxiliary heads.
# The backbone in the stride-8 mode (strides (4, 2, 1, 1)); the PUP head is mmseg's SETRUPHead with three
# 3x3 Conv-BN-ReLU (512->256, 256->256, 256->256), each followed by x2 bilinear upsampling (stride 8 -> 1),
# then conv_seg. Three, not four: the paper's Table 11 implies exactly this head both in parameters (2.365M
# on top of the naive model) and in FLOPs (~125G at 769x769); a fourth 256->256 conv would add 0.59M
# parameters and ~355 GFLOPs at stride 1/2 (see the README (model zoo)).
_base_ = ['mmseg::_base_/models/setr_pup.py', '../_base_/dgmn2_cityscapes-769x769_40k.py']

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
        channels=256,
        in_index=0,
        num_convs=3,
        up_scale=2,
        kernel_size=3,
        dropout_ratio=0,
        norm_cfg=norm_cfg),
    auxiliary_head=None,
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)))

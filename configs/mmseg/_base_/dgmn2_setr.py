# SETR models of the official DGMN2 code (segmentation/configs/_base_/models/setr_*_dgmn2.py): the backbone in
# its stride-8 mode (the official 'decode_head' / 'decode_head_multi' outputs: patch embeddings 3 and 4 with
# stride 1, so stages 3-4 stay at stride 8; same weights), the official heads
# (segmentation/decode_heads/vit_up_head.py, vit_mla_head.py; see OfficialSETRUpHead / OfficialSETRMLAHead),
# align_corners=True, no auxiliary heads. Stochastic depth is off (drop_path_rate 0): the official
# segmentation backbone wrapper (segmentation/backbones/dgmn2.py) leaves it at its default 0.
_base_ = ['./dgmn2_cityscapes-769x769_40k.py']

crop_size = (769, 769)
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)


model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='DGMN2',
        arch='tiny',
        strides=(4, 2, 1, 1),
        out_indices=(3, ),
        norm_cfg=norm_cfg,
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_tiny_mm.pth')),
    decode_head=dict(
        type='OfficialSETRUpHead',
        in_channels=512,
        channels=512,
        in_index=0,
        img_size=769,
        embed_dims=512,
        num_convs=0,
        num_classes=19,
        dropout_ratio=0,
        norm_cfg=norm_cfg,
        align_corners=True,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)))

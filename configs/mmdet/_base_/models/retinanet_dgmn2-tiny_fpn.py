# RetinaNet with a DGMN2-Tiny backbone: mmdet's RetinaNet R-50-FPN model with the ResNet replaced by DGMN2
# (TPAMI 2022 Sec. 4.2, Table 7). FPN of 5 levels from stage 2 (start_level 1, extra convs on the input), as
# mmdet's RetinaNet base. As the official detection backbone (github:fudan-zvg/DGMN2 detection/): plain
# BatchNorm2d in the patch embeddings (trainable, not frozen), no stochastic depth (its wrapper leaves
# drop_path_rate at 0). The types come from dgmn_mm (imported by ../default_runtime.py).
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='DGMN2',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dgmn2_tiny_mm.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))

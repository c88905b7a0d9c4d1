# DGMN w/ DA+DW+DS (the full model; paper Table 2 last row): Dilated-FCN ResNet-101-D8, Cityscapes 769x769,
# 40k iterations, DGMN between the head's two 3x3 convs, sampling rates (1, 6, 12, 24, 36), G = 4.
# Everything else (backbone, data, schedule, auxiliary head) is mmseg's FCN config for the same setting.
_base_ = ['mmseg::fcn/fcn_r101-d8_4xb2-40k_cityscapes-769x769.py']
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

model = dict(
    decode_head=dict(
        type='DGMNHead',
        dilations=(1, 6, 12, 24, 36),
        groups=4,
        dynamic_sampling=True,
        dynamic_weights=True,
        dynamic_affinity=True,
        release_branch4_bug=False))

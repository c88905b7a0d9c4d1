# DGMN w/ DA+DW+DS (the full model; paper Table 2 last row, 80.4 mIoU): Dilated-FCN ResNet-101-D8,
# Cityscapes 769x769, 40k iterations, DGMN between the head's two 3x3 convs.
# Layout: the release's fused `DynamicWeightsCat33(deform='deformatt')` (fusion='concat'): per rate one 3x3
# conv 512 -> 45 = 2x9 filters + 18 walks + 9 affinities (G = 2), concatenation with the input and a 1x1
# conv 6x512 -> 512 + GroupNorm + ReLU; sampling rates (1, 6, 12, 24, 36) (paper Sec. 5.1, supp. Table 14).
# +2.611M params / +24.55 GFLOPs (paper convention) over the Dilated FCN, as the paper's +2.61M / +24.55G.
# Why G = 2 and not the paper's default G = 4: docs/dgmn.md ("The reading that reproduces Table 2").
# Everything else (backbone, data, schedule, auxiliary head) is mmseg's FCN config for the same setting.
_base_ = ['mmseg::fcn/fcn_r101-d8_4xb2-40k_cityscapes-769x769.py']
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

model = dict(
    decode_head=dict(
        type='DGMNHead',
        dilations=(1, 6, 12, 24, 36),
        groups=2,
        dynamic_sampling=True,
        dynamic_weights=True,
        dynamic_affinity=True,
        fusion='concat',
        release_branch4_bug=False))

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

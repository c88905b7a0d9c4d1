# Comparison row of paper Table 2, "+ Deformable" [DCNv2]: mmseg ships no DCN config, so this is ours: the
# Dilated-FCN config with the decode head's 3x3 convolutions replaced by modulated deformable convolutions
# (mmcv 'DCNv2', the "original deformable method which replaces the convolutional operations", Sec. 5.1).
_base_ = ['mmseg::fcn/fcn_r101-d8_4xb2-40k_cityscapes-769x769.py']
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

model = dict(decode_head=dict(conv_cfg=dict(type='DCNv2', deform_groups=1)))

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

# Comparison row of paper Table 2, "Dilated FCN" (the baseline every DGMN increment is measured against):
# mmseg's own config, model and recipe unchanged (see README.md in this folder for why it is here).
_base_ = ['mmseg::fcn/fcn_r101-d8_4xb2-40k_cityscapes-769x769.py']
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

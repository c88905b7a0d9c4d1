# mmpretrain's default runtime for the dgmn_mm configs: `dgmn_mm` is imported (it registers DGMN2, DiT and
# AtomicCheckpointHook into the registries); crash-safe checkpoints every epoch (AtomicCheckpointHook: atomic
# save, old checkpoints deleted last), the last 3 and the best kept.
_base_ = 'mmpretrain::_base_/default_runtime.py'

custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3, save_best='auto'))

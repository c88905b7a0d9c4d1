# mmdet's default runtime for the dgmn_mm configs: `dgmn_mm` is imported (it registers DGMN2, DiT, DGMN and
# AtomicCheckpointHook into the registries) and checkpoints are crash-safe (AtomicCheckpointHook: atomic save,
# old checkpoints deleted last); interval and max_keep_ckpts stay mmdet's.
_base_ = 'mmdet::_base_/default_runtime.py'

custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

# mmseg's default runtime for the dgmn_mm configs: `dgmn_mm` is imported (it registers DGMN2, DiT, DGMNHead,
# the official SETR heads and AtomicCheckpointHook into the registries).
_base_ = 'mmseg::_base_/default_runtime.py'

custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

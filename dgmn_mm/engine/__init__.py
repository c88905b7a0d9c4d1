"""Fixes for running the pinned OpenMMLab stack (mmengine 0.10.7, torch >= 2.6), and the tools' helpers.

- :mod:`.safe_load`: importing this package adds exactly the types mmengine's Runner writes into
  checkpoints to torch's ``weights_only`` allow-list, so ``--resume``/``load_from``/``tools/test.py`` work
  while ``torch.load(weights_only=True)`` keeps refusing anything else.
- :mod:`.dist`: distributed runs without CUDA (gloo process group, :class:`DeviceAgnosticDDP` registered
  into ``MODEL_WRAPPERS``, SyncBN -> :mod:`.sync_bn`'s gloo SyncBN), unchanged nccl/SyncBN behaviour on GPUs.
- :mod:`.checkpoint_hook`: :class:`AtomicCheckpointHook`, mmengine's CheckpointHook with saves that survive a
  kill at any moment (temporary file, fsync, rename; old checkpoints deleted last) and an auto-resume that
  skips an incomplete latest checkpoint.
- :mod:`.data_checks`: the datasets of a config checked before training (missing, empty or unparsable
  annotation files, sets without images or annotations), errors naming the file.
- :mod:`.drop_path_hook`: the official ImageNet recipe's delayed stochastic depth.
- :mod:`.launch`: choosing mmpretrain/mmdet/mmseg from a config for ``tools/train.py``/``tools/test.py``,
  and the flags and first steps the two tools share.
"""
from .checkpoint_hook import AtomicCheckpointHook, find_resumable_checkpoint, is_complete_checkpoint
from .data_checks import DataCheckError, check_data_cfg
from .dist import DeviceAgnosticDDP, convert_syncbn_cfg, default_backend, init_process_group, setup_distributed
from .drop_path_hook import DropPathScheduleHook
from .launch import detect_codebase, init_codebase
from .safe_load import register_safe_globals, safe_globals, unsafe_globals_in_checkpoint
from .sync_bn import GlooSyncBatchNorm, convert_to_gloo_sync_bn

register_safe_globals()

__all__ = [
    'AtomicCheckpointHook', 'GlooSyncBatchNorm', 'convert_to_gloo_sync_bn', 'DataCheckError', 'check_data_cfg',
    'find_resumable_checkpoint', 'is_complete_checkpoint',
    'DeviceAgnosticDDP', 'DropPathScheduleHook', 'convert_syncbn_cfg', 'default_backend', 'init_process_group',
    'setup_distributed',
    'detect_codebase', 'init_codebase', 'register_safe_globals', 'safe_globals',
    'unsafe_globals_in_checkpoint'
]

"""Distributed training that also runs on machines without CUDA (gloo), without patching mmengine.

mmengine 0.10.7 assumes GPUs in two places: ``mmengine.dist.init_dist`` always calls
``torch.cuda.set_device`` before ``init_process_group``, and ``Runner.wrap_model`` always passes
``device_ids=[LOCAL_RANK]`` to ``DistributedDataParallel`` (which DDP rejects for a CPU module). On top of
that, torch's ``SyncBatchNorm`` refuses CPU tensors. :func:`setup_distributed` prepares a config before
``Runner.from_cfg`` so that the same config trains on

- GPUs: nothing changes (mmengine's ``init_dist`` with nccl, SyncBN, ``MMDistributedDataParallel``);
- CPUs: with a launcher, every ``SyncBN`` in the model config becomes :class:`~.sync_bn.GlooSyncBatchNorm`
  (``GlooSyncBN``: batch statistics all-reduced over the processes, as SyncBN does on GPUs, so 2 processes x
  B images train like 1 process x 2B), the process group is initialised here with gloo (so the Runner's
  ``init_dist`` is skipped), ``env_cfg.dist_cfg.backend`` is set to ``'gloo'`` and the model is wrapped by
  :class:`DeviceAgnosticDDP`, which drops ``device_ids``. Without a launcher (one process) ``SyncBN``
  becomes ``BN``, which is the same computation.
"""
import datetime
import os
import subprocess
from typing import Any, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel

from ..registry import MODEL_WRAPPERS

__all__ = [
    'DeviceAgnosticDDP', 'default_backend', 'convert_syncbn_cfg', 'init_process_group',
    'setup_distributed'
]

#: norm ``type`` values that build a synchronised BatchNorm (torch's and mmcv's), all CUDA-only
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN', 'SyncBatchNorm', 'nn.SyncBatchNorm', 'torch.nn.SyncBatchNorm')
#: the wrapper :func:`setup_distributed` puts into ``model_wrapper_cfg`` on CPU
CPU_WRAPPER = 'DeviceAgnosticDDP'


@MODEL_WRAPPERS.register_module()
class DeviceAgnosticDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also wraps CPU modules.

    ``Runner.wrap_model`` always passes ``device_ids=[LOCAL_RANK]``; DDP only accepts ``device_ids`` for a
    module on a single CUDA device. When the module has no CUDA parameter, ``device_ids`` and
    ``output_device`` are dropped (DDP's documented setting for CPU modules); on a GPU module every
    argument is passed through unchanged, so the class behaves exactly like ``MMDistributedDataParallel``.
    """

    def __init__(self, module: torch.nn.Module, **kwargs):
        if not any(p.is_cuda for p in module.parameters()):
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(module=module, **kwargs)


def default_backend() -> str:
    """``'nccl'`` when CUDA is available, else ``'gloo'``."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def convert_syncbn_cfg(node: Any, target: str = 'BN') -> int:
    """Replace, in place, every synchronised-BN ``type`` (see :data:`SYNC_BN_TYPES`, or the class
    ``torch.nn.SyncBatchNorm``) in a (nested) config by ``target``; the other keys (``requires_grad``,
    ``momentum``, ``eps``...) are kept.

    Args:
        node: a config, dict, list or tuple (tuples are walked, their dicts changed in place).
        target (str): the new norm type, ``'BN'`` (one process) or ``'GlooSyncBN'`` (several CPU processes).

    Returns:
        int: the number of replaced entries.
    """
    count = 0
    if isinstance(node, dict):
        norm_type = node.get('type')
        if norm_type is torch.nn.SyncBatchNorm or (isinstance(norm_type, str) and norm_type in SYNC_BN_TYPES):
            node['type'] = target
            count += 1
        for value in node.values():
            count += convert_syncbn_cfg(value, target)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += convert_syncbn_cfg(value, target)
    return count


def _timeout(kwargs: dict) -> dict:
    """mmengine's ``dist_cfg.timeout`` is in seconds; ``init_process_group`` wants a timedelta."""
    timeout = kwargs.get('timeout')
    if timeout is not None and not isinstance(timeout, datetime.timedelta):
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    return kwargs


def init_process_group(launcher: str, backend: str = 'gloo', port: Optional[int] = None, **kwargs) -> None:
    """Initialise the default process group for ``launcher`` without touching CUDA devices.

    The counterpart of ``mmengine.dist.init_dist`` for CPU (gloo) runs; it reads the same environment
    variables: ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` (``pytorch``, set by torchrun),
    ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_NODELIST``/``SLURM_LOCALID`` (``slurm``; the master is the
    first host of the node list, the port ``port``, ``MASTER_PORT`` or 29500), ``OMPI_COMM_WORLD_*``
    (``mpi``, with ``MASTER_ADDR`` set by the user).

    Args:
        launcher (str): 'pytorch', 'slurm' or 'mpi'.
        backend (str): process group backend. Defaults to 'gloo'.
        port (int, optional): slurm master port.
        **kwargs: passed to ``torch.distributed.init_process_group`` (``timeout`` in seconds).
    """
    kwargs = _timeout(dict(kwargs))
    kwargs.pop('init_backend', None)
    if launcher == 'pytorch':
        rank, world_size = int(os.environ['RANK']), int(os.environ['WORLD_SIZE'])
    elif launcher == 'slurm':
        rank, world_size = int(os.environ['SLURM_PROCID']), int(os.environ['SLURM_NTASKS'])
        node_list = os.environ['SLURM_NODELIST']
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:
            os.environ['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {node_list} | head -n1')
        os.environ['WORLD_SIZE'] = str(world_size)
        os.environ['RANK'] = str(rank)
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    elif launcher == 'mpi':
        rank = int(os.environ['OMPI_COMM_WORLD_RANK'])
        world_size = int(os.environ['OMPI_COMM_WORLD_SIZE'])
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:
            raise KeyError('The environment variable MASTER_ADDR is not set')
        os.environ['WORLD_SIZE'] = str(world_size)
        os.environ['RANK'] = str(rank)
        os.environ['LOCAL_RANK'] = os.environ.get('OMPI_COMM_WORLD_LOCAL_RANK', '0')
    else:
        raise ValueError(f'Invalid launcher type: {launcher}')
    torch_dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)


def setup_distributed(cfg: Config, launcher: str = 'none') -> Config:
    """Make ``cfg`` run on the devices present; call it after merging ``--cfg-options``, before
    ``Runner.from_cfg(cfg)``. Modifies and returns ``cfg``.

    With CUDA, only ``env_cfg.dist_cfg.backend`` defaults to ``'nccl'`` (a backend the config names is
    kept) and mmengine does the rest. Without CUDA:

    - every ``SyncBN``/``MMSyncBN`` in ``cfg.model`` (and ``cfg.tta_model``) becomes ``GlooSyncBN`` with a
      launcher, ``BN`` without one, and a ``cfg.sync_bn`` conversion request is dropped (mmengine converts
      to a CUDA-only class);
    - if ``launcher != 'none'``: ``env_cfg.dist_cfg.backend`` becomes ``'gloo'`` (unless the config names
      another non-nccl backend), ``model_wrapper_cfg`` uses :class:`DeviceAgnosticDDP` (a missing one is
      created with mmengine's defaults, ``broadcast_buffers=False`` and ``find_unused_parameters`` of the
      config; a ``MMDistributedDataParallel`` one gets its ``type`` replaced), and the process group is
      initialised here (:func:`init_process_group`).

    Args:
        cfg (Config): the full training/testing config.
        launcher (str): 'none', 'pytorch', 'slurm' or 'mpi'.
    """
    cfg.launcher = launcher
    distributed = launcher != 'none'
    if distributed:
        if cfg.get('env_cfg') is None:
            cfg.env_cfg = ConfigDict()
        if cfg.env_cfg.get('dist_cfg') is None:
            cfg.env_cfg.dist_cfg = ConfigDict()
    if torch.cuda.is_available():
        if distributed:
            cfg.env_cfg.dist_cfg.setdefault('backend', 'nccl')
        return cfg

    target = 'GlooSyncBN' if distributed else 'BN'
    converted = convert_syncbn_cfg(cfg.get('model'), target) + convert_syncbn_cfg(cfg.get('tta_model'), target)
    if converted:
        print_log(f'No CUDA: {converted} SyncBN norm config(s) replaced by {target}.', logger='current')
    if cfg.get('sync_bn') is not None:
        print_log(f'No CUDA: ignoring sync_bn={cfg.sync_bn!r} (SyncBatchNorm needs CUDA).', logger='current')
        cfg.sync_bn = None
    if not distributed:
        return cfg

    dist_cfg = cfg.env_cfg.dist_cfg
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg.backend = 'gloo'
    wrapper_cfg = cfg.get('model_wrapper_cfg')
    if wrapper_cfg is None:
        cfg.model_wrapper_cfg = ConfigDict(
            type=CPU_WRAPPER, broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif str(wrapper_cfg.get('type', 'MMDistributedDataParallel')).split('.')[-1] == \
            'MMDistributedDataParallel':
        wrapper_cfg.type = CPU_WRAPPER
    if not torch_dist.is_initialized():
        init_process_group(launcher, **dist_cfg)
    return cfg

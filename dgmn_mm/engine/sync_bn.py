"""A synchronised BatchNorm that also runs on CPU processes (gloo): what ``SyncBN`` configs use without CUDA.

torch's ``nn.SyncBatchNorm`` (and mmcv's ``MMSyncBN``) only accept CUDA tensors. Replacing them by a
per-process ``BN`` on CPU (what this project did before) changes the method: 2 processes x 4 images then
normalise with 4-image statistics instead of 8-image ones. :class:`GlooSyncBatchNorm` does what SyncBN does
on GPUs, with collectives that every backend has:

- training, in a process group of more than one process: per channel, the sum of the local batch and the
  local element count are all-reduced to the global mean; then the sum of squared deviations from that mean
  is all-reduced to the global (biased) variance. The all-reduces are differentiable
  (``torch.distributed.nn.functional.all_reduce``: the backward all-reduces the gradients of the statistics),
  so every rank's gradient holds the other ranks' terms exactly as in one process with the whole batch.
  Running statistics are updated with the global mean and the unbiased global variance.
- otherwise (eval mode, one process, no process group): plain ``F.batch_norm``, i.e. ``nn.BatchNorm*d``.

The collectives run in a dedicated process group (created on first use, by every rank in the same order
since all ranks run the same forward), so they never interleave with DDP's gradient all-reduces.
Registered as ``GlooSyncBN`` (and the class name) into mmengine's root ``MODELS``, so
``norm_cfg=dict(type='GlooSyncBN')`` builds it from any codebase; :func:`dgmn_mm.engine.setup_distributed`
puts it in place of ``SyncBN`` when a distributed run has no CUDA.
"""
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_reduce
from torch.nn.modules.batchnorm import _BatchNorm

from ..registry import MODELS

__all__ = ['GlooSyncBatchNorm', 'convert_to_gloo_sync_bn']

_GROUPS = {}


def _sync_group():
    """One process group per default group for the statistics' all-reduces (created lazily)."""
    key = (dist.get_world_size(), id(dist.distributed_c10d._get_default_group()))
    if key not in _GROUPS:
        _GROUPS[key] = dist.new_group(backend=dist.get_backend())
    return _GROUPS[key]


@MODELS.register_module('GlooSyncBN')
@MODELS.register_module()
class GlooSyncBatchNorm(_BatchNorm):
    """Batch normalisation over the whole distributed batch, on any device and backend (gloo included).

    Same arguments and state as ``nn.SyncBatchNorm`` (its checkpoints load unchanged); inputs of any
    rank >= 2, (B, C, *). See the module docstring for the algorithm.

    Args:
        num_features (int): C.
        eps (float): added to the variance. Defaults to 1e-5.
        momentum (float | None): running-statistics momentum (None: cumulative average). Defaults to 0.1.
        affine (bool): learnable scale and shift. Defaults to True.
        track_running_stats (bool): keep running statistics. Defaults to True.
        process_group (ProcessGroup, optional): the group to synchronise over; defaults to a dedicated group
            spanning the default group's processes.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f'GlooSyncBatchNorm expects an input of shape (B, C, *), got {tuple(input.shape)}')

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        use_batch_stats = self.training or not self.track_running_stats
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (use_batch_stats and distributed):
            return super().forward(input)  # nn.BatchNorm*d
        group = self.process_group or _sync_group()
        C = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        shape = [1, C] + [1] * (input.dim() - 2)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        count = torch.full((1, ), input.numel() // C, dtype=x.dtype, device=x.device)
        stats = all_reduce(torch.cat([x.sum(dims), count]), group=group)
        total = stats[C:].detach()
        if float(total) < 2 and self.training:
            raise ValueError(f'Expected more than 1 value per channel when training over all processes, got '
                             f'{int(total)} (input {tuple(input.shape)} on this process)')
        mean = stats[:C] / total
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims), group=group) / total
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.mul_(1 - momentum).add_(mean.detach().to(self.running_mean.dtype),
                                                          alpha=momentum)
                unbiased = var.detach() * (total / (total - 1))
                self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)
        return out.to(input.dtype)


def convert_to_gloo_sync_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Replace every ``nn.SyncBatchNorm`` / ``nn.BatchNorm*d`` of ``module`` by :class:`GlooSyncBatchNorm`
    (states copied); the counterpart of ``nn.SyncBatchNorm.convert_sync_batchnorm`` for gloo runs."""
    output = module
    if isinstance(module, _BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        output = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                output.weight = module.weight
                output.bias = module.bias
        output.running_mean = module.running_mean
        output.running_var = module.running_var
        output.num_batches_tracked = module.num_batches_tracked
        output.training = module.training
    for name, child in module.named_children():
        output.add_module(name, convert_to_gloo_sync_bn(child))
    return output

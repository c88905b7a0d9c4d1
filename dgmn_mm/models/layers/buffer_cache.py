"""Reusable output buffers for inference: large per-call tensors without fresh pages on every call.

A tensor above glibc's ``mmap`` threshold (32 MB at most) is mapped from the kernel on every allocation
and unmapped on release, so each call pays the first touch of its pages again (about 0.55 ms per MB on a
VM; for the (N, 3C) qkv of a DGMN2 stage-1 layer at 1024 x 2048, 100 MB: ~55 ms of a ~190 ms layer). A
buffer kept between calls is touched once. This is only correct where the result is consumed before the
next call needs the buffer, i.e. for temporaries inside a forward without autograd (an autograd graph
would keep a reference to it across calls), which :func:`cached_linear` checks.

One :class:`BufferCache` per thread and device is shared by all the layers that use a given ``key``: the
layers of a model run one after the other, so one buffer serves them all and the resident cost is the
largest such buffer (not one per layer). ``clear_buffer_cache()`` releases everything.
"""
import threading
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ['BufferCache', 'get_buffer_cache', 'clear_buffer_cache', 'cached_linear']

_local = threading.local()


class BufferCache:
    """Named flat buffers that grow to the largest size asked for and are handed out as views.

    Args:
        min_bytes (int): requests smaller than this get a fresh ``torch.empty`` (the allocator recycles
            small blocks by itself). Defaults to 4 MB.
    """

    def __init__(self, min_bytes: int = 4 * 2 ** 20):
        self.min_bytes = min_bytes
        self._bufs: Dict[Tuple[str, torch.dtype, torch.device], Tensor] = {}

    def get(self, key: str, shape, dtype: torch.dtype, device) -> Tensor:
        """An uninitialised contiguous tensor of ``shape``: a view of the cached buffer ``key``."""
        shape = torch.Size(shape)
        numel = shape.numel()
        device = torch.device(device)
        if numel * torch.empty((), dtype=dtype).element_size() < self.min_bytes:
            return torch.empty(shape, dtype=dtype, device=device)
        k = (key, dtype, device)
        buf = self._bufs.get(k)
        if buf is None or buf.numel() < numel:
            self._bufs.pop(k, None)  # release the old one first
            buf = self._bufs[k] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)

    def nbytes(self) -> int:
        """Bytes held (the resident cost once the buffers have been written)."""
        return sum(b.numel() * b.element_size() for b in self._bufs.values())

    def clear(self):
        self._bufs.clear()


def get_buffer_cache() -> BufferCache:
    """The calling thread's cache (threads running models concurrently get separate buffers)."""
    cache = getattr(_local, 'cache', None)
    if cache is None:
        cache = _local.cache = BufferCache()
    return cache


def clear_buffer_cache():
    get_buffer_cache().clear()


def cached_linear(linear: nn.Linear, x: Tensor, key: str = 'linear') -> Tensor:
    """``linear(x)`` written into the cached buffer ``key`` when nothing needs the result after the next
    call: no autograd recording (``torch.is_grad_enabled()`` false or no tensor requiring grad), not under
    autocast, not traced or compiled. Otherwise it is plain ``linear(x)``. The same ``addmm`` runs, so the
    values are identical; the returned tensor is overwritten by the next call with the same key."""
    needs_graph = torch.is_grad_enabled() and (x.requires_grad or linear.weight.requires_grad)
    if (needs_graph or torch.is_autocast_enabled(x.device.type) or torch.jit.is_tracing()
            or torch.compiler.is_compiling() or linear.bias is None or x.dtype != linear.weight.dtype):
        return linear(x)
    out = get_buffer_cache().get(key, (*x.shape[:-1], linear.out_features), x.dtype, x.device)
    torch.addmm(linear.bias, x.reshape(-1, x.shape[-1]), linear.weight.t(), out=out.view(-1, out.shape[-1]))
    return out


def linear_reference(linear: nn.Linear, x: Tensor) -> Tensor:  # for tests: the op cached_linear replaces
    return F.linear(x, linear.weight, linear.bias)

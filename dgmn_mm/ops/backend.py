"""Which implementation runs the sampled-attention operators, per device.

Automatic choice:

* CPU: ``'cpp'`` (the C++/OpenMP kernel ``dgmn_mm.ops._sampled_attention_cpp``) when it is built, else
  ``'torch'``;
* CUDA: ``'triton'`` (``dgmn_mm.ops.triton``) when it imports, else ``'torch'``;
* other devices: ``'torch'``.

When the automatic choice has to fall back, one warning per backend says why (the import error) and how to
build it. ``DGMN_MM_ATTN_BACKEND=cpp|triton|torch`` forces a backend for every device; forcing one that
cannot run raises :class:`BackendUnavailableError` (never a silent fallback). ``'cpp'`` runs on CPU
tensors only; ``'triton'`` on CPU runs the Triton kernels in the interpreter (``TRITON_INTERPRET=1`` is set
before they are imported; slow, for testing).
"""
import importlib
import os
import warnings
from typing import Optional

BACKENDS = ('cpp', 'triton', 'torch')
ENV_VAR = 'DGMN_MM_ATTN_BACKEND'
BUILD_HINT = ('build it with `pip install --no-build-isolation -e .` (or `python dgmn_mm/ops/csrc/build.py`) '
              'in an environment that has torch')


class BackendUnavailableError(RuntimeError):
    """A forced backend (``DGMN_MM_ATTN_BACKEND``) cannot run."""


_modules = {}  # name -> module
_errors = {}  # name -> import error text
_warned = set()


def _load(name: str):
    if name in _modules:
        return _modules[name]
    if name in _errors:
        return None
    try:
        if name == 'cpp':
            mod = None
            for suffix in _cpu_variants():  # x86-64-v4 / v3 builds of the same source, when built
                try:
                    mod = importlib.import_module(f'dgmn_mm.ops._sampled_attention_cpp_{suffix}')
                    break
                except ImportError:
                    mod = None
            if mod is None:
                mod = importlib.import_module('dgmn_mm.ops._sampled_attention_cpp')
        elif name == 'triton':
            mod = importlib.import_module('dgmn_mm.ops.triton')
            for fn in ('sampled_attention_fwd', 'sampled_attention_bwd'):
                if not hasattr(mod, fn):
                    raise ImportError(f'dgmn_mm.ops.triton has no {fn}')
        else:
            raise ValueError(name)
    except Exception as e:  # not built, ABI mismatch, triton missing...
        _errors[name] = f'{type(e).__name__}: {e}'
        return None
    _modules[name] = mod
    return mod


def _cpu_variants():
    """Suffixes of the kernel builds this CPU runs, best first (torch's CPU capability report)."""
    try:
        import torch
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:
        return ()
    return {'AVX512': ('avx512', 'avx2'), 'AVX2': ('avx2', )}.get(cap, ())


def load_extension():
    """The compiled C++ kernel module, or None when it does not import (see :func:`import_error`)."""
    return _load('cpp')


def import_error(name: str) -> Optional[str]:
    """The import error of backend ``name`` ('cpp' or 'triton'), None if it imported (or was not tried)."""
    return _errors.get(name)


def forced_backend() -> Optional[str]:
    value = os.environ.get(ENV_VAR, '').strip().lower()
    if not value:
        return None
    if value not in BACKENDS:
        raise ValueError(f'{ENV_VAR} must be one of {BACKENDS} (or unset), got {value!r}')
    return value


def _triton_on_cpu():
    if 'triton' not in _modules and 'dgmn_mm.ops.triton' not in __import__('sys').modules:
        os.environ.setdefault('TRITON_INTERPRET', '1')
    if os.environ.get('TRITON_INTERPRET', '0') != '1':
        raise BackendUnavailableError(
            f"{ENV_VAR}=triton on CPU tensors needs the Triton interpreter: set TRITON_INTERPRET=1 before "
            "dgmn_mm.ops.triton is imported")
    return _load('triton')


def resolve(device_type: str) -> str:
    """The backend that runs on ``device_type`` ('cpu', 'cuda', ...): forced, or the automatic choice."""
    forced = forced_backend()
    if forced is not None:
        if forced == 'torch':
            return 'torch'
        if forced == 'cpp':
            if device_type != 'cpu':
                raise BackendUnavailableError(f"{ENV_VAR}=cpp runs on CPU tensors only, got {device_type!r} "
                                              "tensors (use 'triton' or 'torch')")
            if _load('cpp') is None:
                raise BackendUnavailableError(
                    f'{ENV_VAR}=cpp but the C++ kernel does not import ({_errors["cpp"]}); {BUILD_HINT}')
            return 'cpp'
        # triton
        mod = _triton_on_cpu() if device_type == 'cpu' else _load('triton')
        if mod is None:
            raise BackendUnavailableError(
                f'{ENV_VAR}=triton but dgmn_mm.ops.triton does not import ({_errors["triton"]})')
        return 'triton'
    if device_type == 'cpu':
        auto = 'cpp'
    elif device_type == 'cuda':
        auto = 'triton'
    else:
        return 'torch'
    if _load(auto) is not None:
        return auto
    if auto not in _warned:
        _warned.add(auto)
        how = BUILD_HINT if auto == 'cpp' else 'install triton (it ships with CUDA builds of torch)'
        warnings.warn(f"dgmn_mm sampled attention: the {auto!r} backend for {device_type} tensors is not "
                      f"available ({_errors[auto]}); using the pure-PyTorch backend (same results, slower). "
                      f"To use it, {how}. Set {ENV_VAR}=torch to choose the PyTorch backend explicitly.",
                      RuntimeWarning, stacklevel=3)
    return 'torch'


def describe() -> dict:
    """The backend each device would use now (or the error a forced backend raises)."""
    out = {}
    for dev in ('cpu', 'cuda'):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            try:
                name = resolve(dev)
                note = ''
                if forced_backend() is None and name == 'torch' and dev in ('cpu', 'cuda'):
                    note = f" (fallback: {_errors.get('cpp' if dev == 'cpu' else 'triton')})"
                out[dev] = name + note
            except (BackendUnavailableError, ValueError) as e:
                out[dev] = f'error: {e}'
    return out


def _reset_for_tests():
    """Forget imports, errors and warnings (tests simulate missing kernels)."""
    _modules.clear()
    _errors.clear()
    _warned.clear()

"""Loading mmengine checkpoints with torch's safe unpickler (``torch.load(weights_only=True)``).

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True``: only tensors, containers, primitive types
and an explicit allow-list of globals may be unpickled. mmengine 0.10.7's ``Runner.save_checkpoint`` also
writes the state of the message hub (``HistoryBuffer`` objects holding numpy arrays) and numpy scalars, so
``--resume``, ``load_from`` and ``tools/test.py`` fail with ``UnpicklingError: ... Unsupported global``.

The fix here is the narrow one: :func:`register_safe_globals` (run on ``import dgmn_mm``) adds exactly the
types that mmengine's Runner writes to torch's allow-list with ``torch.serialization.add_safe_globals``.
``weights_only`` stays on, so a checkpoint that references anything else (``os.system``, ``eval``, any
class outside the list) is still refused. Never set ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` or pass
``weights_only=False`` to work around a checkpoint you did not write yourself.

What is allowed, and why (measured on checkpoints written by the mmpretrain, mmdet and mmseg runners,
see ``tests/test_engine/test_engine_setup.py``):

- ``mmengine.logging.history_buffer.HistoryBuffer``: the values in ``message_hub.log_scalars``;
- ``builtins.getattr``, but only as :func:`history_buffer_method`, a stand-in that returns nothing but
  ``HistoryBuffer.min``/``max``/``current``/``mean``: ``HistoryBuffer.__getstate__`` pickles its
  ``statistics_methods`` and pickle protocol 2 writes a method as ``getattr(HistoryBuffer, 'min')``. The
  real ``getattr`` is never allowed (it reaches ``__globals__`` and from there ``os.system``);
- ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``: the arrays inside them;
- ``numpy._core.multiarray.scalar`` and the concrete dtype classes of ``numpy.dtypes`` (``Float64DType``,
  ``Int64DType``, ...): numpy scalars (e.g. a loss logged as ``np.float64``) in the message hub or ``meta``.

Each of these only builds plain data (an array, a dtype, a scalar, or a ``HistoryBuffer`` whose state is
restored by the same restricted unpickler); none of them can call arbitrary code. The numpy names are also
registered under their numpy 1.x spelling (``numpy.core.multiarray.*``) so that checkpoints written with
numpy 1.x load with numpy 2.x.
"""
import pickle
from typing import Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

SafeGlobal = Union[Callable, Tuple[Callable, str]]

__all__ = ['safe_globals', 'register_safe_globals', 'unsafe_globals_in_checkpoint', 'history_buffer_method']

#: the statistics methods ``HistoryBuffer`` registers by default (and therefore pickles)
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def history_buffer_method(obj, name: str):
    """The only ``getattr`` a checkpoint may call: ``getattr(HistoryBuffer, m)`` for a default statistics
    method ``m`` (:data:`HISTORY_BUFFER_METHODS`). Anything else raises ``pickle.UnpicklingError``.

    Registered as ``builtins.getattr`` in torch's allow-list, so it replaces ``getattr`` only inside
    ``torch.load(weights_only=True)``. A checkpoint holding a custom statistics method registered with
    ``HistoryBuffer.register_statistics`` is refused (load it with a ``safe_globals`` context if trusted).
    """
    if obj is HistoryBuffer and name in HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed by dgmn_mm\'s weights_only allow-list (only '
        f'HistoryBuffer.{{{",".join(HISTORY_BUFFER_METHODS)}}})')


def _numpy_multiarray():
    """numpy's ``multiarray`` module: ``numpy._core.multiarray`` (numpy 2) or ``numpy.core.multiarray``."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 1.26 has no numpy._core
        from numpy.core import multiarray
    return multiarray


def _concrete_dtype_classes() -> List[type]:
    """The concrete ``np.dtype`` subclasses (``numpy.dtypes.Float64DType`` ...) that numpy 2 pickles."""
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is None:  # numpy < 1.25 has no numpy.dtypes; its dtypes pickle as plain numpy.dtype
        return []
    classes = []
    for name in sorted(dir(dtypes)):
        obj = getattr(dtypes, name)
        if isinstance(obj, type) and issubclass(obj, np.dtype) and obj is not np.dtype:
            classes.append(obj)
    return classes


def safe_globals() -> List[SafeGlobal]:
    """The allow-list: every global that mmengine's Runner writes into a checkpoint, nothing else.

    Entries are callables, or ``(callable, 'qualified.name')`` pairs for numpy 1.x spellings of the same
    functions (``torch.serialization.add_safe_globals`` accepts both forms).
    """
    multiarray = _numpy_multiarray()
    allowed: List[SafeGlobal] = [
        HistoryBuffer,
        (history_buffer_method, 'builtins.getattr'),
        multiarray._reconstruct,
        multiarray.scalar,
        np.ndarray,
        np.dtype,
        *_concrete_dtype_classes(),
    ]
    # checkpoints pickled under numpy 1.x name the same functions `numpy.core.multiarray.*`
    if multiarray.__name__ != 'numpy.core.multiarray':
        allowed += [(multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
                    (multiarray.scalar, 'numpy.core.multiarray.scalar')]
    return allowed


def register_safe_globals() -> List[SafeGlobal]:
    """Add :func:`safe_globals` to torch's ``weights_only`` allow-list (idempotent; runs on ``import dgmn_mm``).

    Returns:
        list: the entries that were registered.
    """
    allowed = safe_globals()
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:  # torch < 2.4 has no allow-list (and does not default to weights_only=True)
        add(allowed)
    return allowed


def unsafe_globals_in_checkpoint(path: str) -> List[str]:
    """Globals in a checkpoint file that ``torch.load(weights_only=True)`` would refuse right now.

    A diagnostic for checkpoints written by other tools: an empty list means the file loads safely.
    Only the pickle's opcodes are read; nothing in it is executed.
    """
    return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))

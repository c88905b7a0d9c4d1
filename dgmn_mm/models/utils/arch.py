"""Argument checks shared by the dgmn_mm backbones.

One arch parser (:func:`parse_arch`: a name/alias of the class's ``arch_zoo`` or a dict -> the settings,
required keys checked), one ``out_indices`` normaliser (:func:`normalize_out_indices`) and small
validators that raise a ``ValueError``/``TypeError`` naming the argument and the allowed values.
"""
import numbers
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

__all__ = ['parse_arch', 'normalize_out_indices', 'check_choice', 'check_rate', 'check_int', 'check_cfg',
           'check_bool', 'conv_out_size']


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def parse_arch(arch, arch_zoo: Mapping[str, dict], required_keys: Sequence[str], num_stages: int,
               defaults: Optional[Mapping[str, Any]] = None, positive_int_keys: Iterable[str] = (),
               model: str = 'model', name: str = 'arch') -> Dict[str, tuple]:
    """The settings of an architecture, as mmpretrain's backbones choose them.

    Args:
        arch (str | dict): a key of ``arch_zoo`` (case-insensitive; aliases are separate keys of the zoo),
            or a dict holding every key of ``required_keys``, each a sequence of ``num_stages`` values.
        arch_zoo (Mapping[str, dict]): the class's ``arch_zoo``.
        required_keys (Sequence[str]): keys the settings must have.
        num_stages (int): length of every per-stage entry.
        defaults (Mapping, optional): settings a zoo entry may leave out (e.g. shared widths).
        positive_int_keys (Iterable[str]): keys whose values must be integers >= 1 (``depths`` may be 0
            only if it is not listed here).
        model (str): the model's name for the messages.
        name (str): the argument's name for the messages.

    Returns:
        dict: ``{key: tuple of num_stages values}`` for every required key.
    """
    if isinstance(arch, str):
        key = arch.lower()
        if key not in arch_zoo:
            raise ValueError(f'{name}: unknown {model} arch {arch!r}; choose from {sorted(arch_zoo)} or pass a '
                             f'dict with keys {list(required_keys)}')
        settings = {**(defaults or {}), **arch_zoo[key]}
    elif isinstance(arch, Mapping):
        missing = [k for k in required_keys if k not in arch]
        if missing:
            raise ValueError(f'{name}: the arch dict is missing {missing} (required: {list(required_keys)})')
        settings = dict(arch)
    else:
        raise TypeError(f'{name} must be a str (one of {sorted(arch_zoo)}) or a dict, got {type(arch).__name__}')
    out = {}
    for k in required_keys:
        value = settings[k]
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ValueError(f'{name}[{k!r}] must be a sequence of {num_stages} values, got {value!r}')
        value = tuple(value)
        if len(value) != num_stages:
            raise ValueError(f'{name}[{k!r}] must have {num_stages} values (one per stage), got {value!r}')
        out[k] = value
    for k in positive_int_keys:
        for v in out.get(k, ()):
            if not _is_int(v) or v < 1:
                raise ValueError(f'{name}[{k!r}] must hold integers >= 1, got {out[k]!r}')
    return out


def normalize_out_indices(out_indices, num_stages: int, name: str = 'out_indices',
                          sort: bool = True) -> Tuple[int, ...]:
    """``out_indices`` (an int or a sequence of ints, negative ones counting from the end) as a tuple of
    distinct stage indices in ``[0, num_stages)``, sorted (``sort=True``, for models that return their maps
    in stage order) or in the given order."""
    if _is_int(out_indices):
        out_indices = (out_indices, )
    if isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, Iterable):
        raise TypeError(f'{name} must be an int or a sequence of ints in [{-num_stages}, {num_stages - 1}], '
                        f'got {out_indices!r}')
    values = tuple(out_indices)
    if not values:
        raise ValueError(f'{name} must name at least one stage in [{-num_stages}, {num_stages - 1}], got ()')
    bad = [i for i in values if not _is_int(i) or not -num_stages <= i < num_stages]
    if bad:
        raise ValueError(f'{name} must be ints in [{-num_stages}, {num_stages - 1}], got {values!r}')
    normalized = tuple(i % num_stages for i in values)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f'{name} names a stage twice: {values!r} -> {normalized!r}')
    return tuple(sorted(normalized)) if sort else normalized


def check_choice(name: str, value, choices: Sequence) -> Any:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in tuple(choices):
        raise ValueError(f'{name} must be one of {tuple(choices)}, got {value!r}')
    return value


def check_rate(name: str, value) -> float:
    """A probability-like rate in ``[0, 1)`` (dropout, stochastic depth)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f'{name} must be a number in [0, 1), got {value!r}')
    return float(value)


def check_int(name: str, value, low: Optional[int] = None, high: Optional[int] = None) -> int:
    """An integer in ``[low, high]`` (either bound optional)."""
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        lo = '-inf' if low is None else low
        hi = 'inf' if high is None else high
        raise ValueError(f'{name} must be an integer in [{lo}, {hi}], got {value!r}')
    return int(value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f'{name} must be True or False, got {value!r}')
    return value


def check_cfg(name: str, value, optional: bool = False) -> Optional[dict]:
    """A layer config: a dict with a ``type`` key (``None`` allowed if ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, Mapping) or 'type' not in value:
        allowed = "a dict with a 'type' key" + (' or None' if optional else '')
        raise TypeError(f'{name} must be {allowed}, e.g. dict(type=...), got {value!r}')
    return value


def conv_out_size(size: int, stride: int, kernel: int = 3, padding: int = 1) -> int:
    """Output length of a convolution: ``(size + 2 * padding - kernel) // stride + 1``."""
    return (size + 2 * padding - kernel) // stride + 1

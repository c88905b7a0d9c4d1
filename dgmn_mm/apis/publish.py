"""Published checkpoints, the OpenMMLab way: weights and plain metadata, a short sha256 in the file name.

mmengine's ``Runner`` saves ``state_dict`` and ``meta`` next to the optimizer, the parameter schedulers and
the message hub (``HistoryBuffer`` objects, numpy scalars). torch >= 2.6 loads checkpoints with
``weights_only=True``, which refuses those objects unless something (here: ``import dgmn_mm``) has put them
on its allow-list. A *published* checkpoint keeps only what inference needs:

- ``state_dict``: the model weights (tensors);
- ``meta``: plain Python values only (``str``, ``int``, ``float``, ``bool``, ``None`` and lists, tuples
  and str-keyed dicts of them; numpy scalars and arrays become Python numbers and lists, anything else is
  dropped). ``meta['cfg']`` (the config text, used by ``DetInferencer(model=None, weights=...)``) and
  ``meta['dataset_meta']`` (class names and palette) are kept.

so it loads with plain ``torch.load(path, weights_only=True)`` in any process, with or without dgmn_mm
imported. The file is named ``<stem>-<first 8 hex digits of its sha256>.pth``, as ``publish_model.py`` of
mmdet / mmseg / mmpretrain do.
"""
import hashlib
import os
import os.path as osp
from typing import Any, Dict, Optional

import torch

__all__ = ['DROPPED_KEYS', 'plain_meta', 'publish_checkpoint', 'save_published', 'sha256_prefix']

#: top-level checkpoint entries that a published file never carries
DROPPED_KEYS = ('optimizer', 'message_hub', 'param_schedulers', 'ema_state_dict', 'scheduler', 'amp')

_DROP = object()


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        import numpy as np
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover - numpy is always there with torch
        pass
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        items = [v for v in items if v is not _DROP]
        return type(value)(items) if type(value) in (list, tuple) else list(items)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            v = _plain(v)
            if isinstance(k, str) and v is not _DROP:
                out[k] = v
        return out
    return _DROP


def plain_meta(meta: Optional[dict]) -> Dict[str, Any]:
    """``meta`` reduced to plain Python values (see the module docstring); ``{}`` for ``None``."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise TypeError(f'meta must be a dict or None, got {type(meta).__name__}')
    return _plain(meta)


def sha256_prefix(path: str, length: int = 8) -> str:
    """The first ``length`` hex digits of the file's sha256."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()[:length]


def save_published(state_dict: Dict[str, torch.Tensor], out_file: str, meta: Optional[dict] = None) -> str:
    """Write ``{'state_dict', 'meta'}`` to ``out_file`` and rename it to ``<stem>-<sha256[:8]>.pth``.

    Args:
        state_dict (dict[str, Tensor]): model weights (moved to CPU, detached).
        out_file (str): wanted path; its ``.pth`` suffix (if any) is replaced by ``-<hash>.pth``.
        meta (dict, optional): metadata, reduced with :func:`plain_meta`.

    Returns:
        str: the final path.
    """
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise TypeError('state_dict must be a dict of tensors')
    state_dict = {k: v.detach().cpu() for k, v in state_dict.items()}
    stem = out_file[:-4] if out_file.endswith('.pth') else out_file
    if osp.dirname(stem):
        os.makedirs(osp.dirname(stem), exist_ok=True)
    tmp = stem + '.tmp.pth'
    torch.save(dict(state_dict=state_dict, meta=plain_meta(meta)), tmp)
    final = f'{stem}-{sha256_prefix(tmp)}.pth'
    os.replace(tmp, final)
    return final


def publish_checkpoint(in_file: str, out_file: str) -> str:
    """Publish an mmengine (or plain) checkpoint: keep the weights and plain metadata (see module docs).

    ``in_file`` is read with ``weights_only=True`` after ``import dgmn_mm`` has allowed exactly the types
    mmengine's Runner writes (:mod:`dgmn_mm.engine.safe_load`); a checkpoint holding anything else is refused.
    A checkpoint that is a bare state dict is accepted as the weights.
    """
    from .. import engine  # noqa: F401  (weights_only allow-list of mmengine's checkpoint types)
    ckpt = torch.load(in_file, map_location='cpu', weights_only=True)
    if not isinstance(ckpt, dict):
        raise TypeError(f'{in_file}: expected a dict checkpoint, got {type(ckpt).__name__}')
    if 'state_dict' in ckpt:
        state_dict, meta = ckpt['state_dict'], ckpt.get('meta')
    elif all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state_dict, meta = ckpt, None
    else:
        raise ValueError(f'{in_file}: no state_dict in the checkpoint (keys: {sorted(ckpt)[:10]})')
    return save_published(state_dict, out_file, meta)

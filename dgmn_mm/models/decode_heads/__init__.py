"""Decode heads on mmseg's classes: :class:`DGMNHead` (an ``FCNHead``) and the official SETR heads (on
``BaseDecodeHead``). They are registered lazily (:func:`dgmn_mm.registry.register_lazy`): ``import dgmn_mm``
does not import mmseg; the first build of ``type='DGMNHead'`` (or an attribute access such as
``from dgmn_mm.models.decode_heads import DGMNHead``) does. Without mmsegmentation a placeholder asks for
``pip install "dgmn_mm[mmseg]"``."""
import importlib

from ...registry import register_lazy

#: registered name -> module of this package that defines it
_HEADS = {
    'DGMNHead': 'dgmn_head',
    'OfficialSETRUpHead': 'setr_official_heads',
    'OfficialSETRMLAHead': 'setr_official_heads',
}

__all__ = list(_HEADS)


def __getattr__(name: str):  # PEP 562: the classes are imported (with mmseg) on first access
    if name in _HEADS:
        return getattr(importlib.import_module(f'.{_HEADS[name]}', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


for _name in _HEADS:
    register_lazy(_name, 'mmseg', lambda _name=_name: __getattr__(_name))
del _name

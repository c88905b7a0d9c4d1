"""Decode heads. :class:`DGMNHead` subclasses mmseg's ``FCNHead``: registered only when mmsegmentation is
installed (otherwise a placeholder asks for ``pip install "dgmn_mm[mmseg]"``, see :mod:`dgmn_mm.registry`)."""
from ...registry import codebase_available, register_missing

__all__ = []

if codebase_available('mmseg'):
    from .dgmn_head import DGMNHead  # noqa: F401
    from .setr_official_heads import OfficialSETRMLAHead, OfficialSETRUpHead  # noqa: F401
    __all__ += ['DGMNHead', 'OfficialSETRUpHead', 'OfficialSETRMLAHead']
else:
    for _name in ('DGMNHead', 'OfficialSETRUpHead', 'OfficialSETRMLAHead'):
        register_missing(_name, 'mmseg')

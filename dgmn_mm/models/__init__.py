"""Models. Backbones, layers and necks need only mmengine and mmcv; the codebase-specific pieces (DGMN head:
mmseg; DiT budget-loss models: mmpretrain, mmdet, mmseg) are registered only when their codebase is
installed, and otherwise as placeholders whose build names the extra to install (:mod:`dgmn_mm.registry`)."""
from ..registry import codebase_available, register_missing
from . import backbones, decode_heads, dit_models, layers, necks  # noqa: F401

# The DiT models subclass an upstream model class on first build; without that codebase the name builds a
# placeholder that raises an ImportError naming the extra.
for _name, (_module, _) in dit_models._UPSTREAM.items():
    _codebase = _module.split('.')[0]
    if not codebase_available(_codebase):
        register_missing(_name, _codebase)
del _name, _module, _codebase

"""Models. Backbones, layers and necks need only mmengine and mmcv; the codebase-specific pieces (DGMN and
official SETR heads: mmseg; DiT budget-loss models: mmpretrain, mmdet, mmseg) are registered lazily, as
factories that import their codebase on the first build, and as placeholders whose build names the extra to
install when the codebase is missing (:func:`dgmn_mm.registry.register_lazy`)."""
from . import backbones, decode_heads, dit_models, layers, necks  # noqa: F401

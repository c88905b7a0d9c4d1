from . import backbones, decode_heads, dit_models, layers, necks  # noqa: F401

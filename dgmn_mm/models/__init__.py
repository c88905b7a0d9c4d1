from . import backbones, decode_heads, dit_models, layers  # noqa: F401

"""User-facing helpers: published checkpoints (:mod:`.publish`) and the model index (:mod:`.model_index`)."""
from .model_index import metafiles, mim_root, model_index_path, register_mmpretrain_models
from .publish import plain_meta, publish_checkpoint, save_published, sha256_prefix

__all__ = [
    'metafiles', 'mim_root', 'model_index_path', 'register_mmpretrain_models', 'plain_meta',
    'publish_checkpoint', 'save_published', 'sha256_prefix'
]

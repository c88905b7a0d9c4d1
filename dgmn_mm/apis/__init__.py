"""User-facing helpers: published checkpoints (:mod:`.publish`) and the model index (:mod:`.model_index`)."""
from .publish import plain_meta, publish_checkpoint, save_published, sha256_prefix

__all__ = ['plain_meta', 'publish_checkpoint', 'save_published', 'sha256_prefix']

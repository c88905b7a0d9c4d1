"""The one place where dgmn_mm registers its classes.

OpenMMLab codebases each own a child of mmengine's root registries (``mmdet.registry.MODELS`` is a child of
``mmengine.registry.MODELS``, and so are mmseg's and mmpretrain's). A name is looked up in the current scope
and then in its parents, never in siblings. Registering into the *root* registries (as mmcv does for
``ContextBlock`` and ``NonLocal2d``) therefore makes ``type='DGMN2'`` resolve from the mmpretrain, mmdet
and mmseg scopes alike, and keeps dgmn_mm importable without importing any of the three codebases.

Every dgmn_mm module registers through the aliases below, never through a codebase's own registry.
"""
from mmengine.registry import DATASETS, HOOKS, MODEL_WRAPPERS, MODELS, TRANSFORMS

__all__ = ['MODELS', 'DATASETS', 'TRANSFORMS', 'HOOKS', 'MODEL_WRAPPERS']

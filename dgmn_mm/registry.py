"""The one place where dgmn_mm registers its classes, and its policy for the optional codebases.

OpenMMLab codebases each own a child of mmengine's root registries (``mmdet.registry.MODELS`` is a child of
``mmengine.registry.MODELS``, and so are mmseg's and mmpretrain's). A name is looked up in the current scope
and then in its parents, never in siblings. Registering into the *root* registries (as mmcv does for
``ContextBlock`` and ``NonLocal2d``) therefore makes ``type='DGMN2'`` resolve from the mmpretrain, mmdet
and mmseg scopes alike.

Import policy. dgmn_mm needs only torch, mmengine and mmcv; mmdet, mmsegmentation and mmpretrain are
optional extras (``pip install "dgmn_mm[mmdet]"``, ``[mmseg]``, ``[mmpretrain]``, ``[all]``). The
backbones, layers and necks never import a codebase. Pieces that subclass a codebase's class (the
DGMN and official SETR heads on mmseg's ``FCNHead`` / ``BaseDecodeHead``; the DiT models on
``ImageClassifier`` / ``RetinaNet`` / ``MaskRCNN`` / ``EncoderDecoder``) are registered with
:func:`register_lazy`: when their codebase is importable (:func:`codebase_available`, which does not import
it) the registry holds a small factory that imports the codebase on the first build, so ``import dgmn_mm``
imports none of mmdet, mmseg and mmpretrain's models; when it is not, :func:`register_missing` puts a
placeholder under the same name whose build raises an ``ImportError`` naming the extra to install, so a
config that needs a missing codebase fails with that message rather than with
``KeyError: ... is not in the model registry``.

Every dgmn_mm module registers through the aliases below, never through a codebase's own registry.
"""
import importlib
import importlib.util
import sys
from typing import Callable

from mmengine.registry import DATASETS, HOOKS, MODEL_WRAPPERS, MODELS, TRANSFORMS

__all__ = [
    'MODELS', 'DATASETS', 'TRANSFORMS', 'HOOKS', 'MODEL_WRAPPERS', 'CODEBASES', 'codebase_available',
    'require_codebase', 'register_missing', 'register_lazy'
]

#: import name -> (PyPI distribution, dgmn_mm extra)
CODEBASES = {
    'mmdet': ('mmdet', 'mmdet'),
    'mmseg': ('mmsegmentation', 'mmseg'),
    'mmpretrain': ('mmpretrain', 'mmpretrain'),
}


def _check_name(codebase: str) -> None:
    if codebase not in CODEBASES:
        raise ValueError(f'codebase must be one of {sorted(CODEBASES)}, got {codebase!r}')


def codebase_available(codebase: str) -> bool:
    """Whether ``codebase`` ('mmdet', 'mmseg' or 'mmpretrain') can be imported, without importing it.

    A ``None`` entry in ``sys.modules`` (an import deliberately blocked) counts as missing.
    """
    _check_name(codebase)
    if codebase in sys.modules:
        return sys.modules[codebase] is not None
    try:
        return importlib.util.find_spec(codebase) is not None
    except (ImportError, ValueError):
        return False


def missing_codebase_message(codebase: str, what: str) -> str:
    _check_name(codebase)
    dist, extra = CODEBASES[codebase]
    return (f'{what} needs {dist}, which is not installed: pip install "dgmn_mm[{extra}]" '
            f'(or pip install {dist})')


def require_codebase(codebase: str, what: str):
    """Import and return ``codebase``, or raise an ``ImportError`` naming the dgmn_mm extra to install."""
    if not codebase_available(codebase):
        raise ImportError(missing_codebase_message(codebase, what))
    return importlib.import_module(codebase)


def register_missing(name: str, codebase: str, registry=MODELS) -> None:
    """Register a placeholder ``name`` whose build raises the missing-codebase ``ImportError``."""
    message = missing_codebase_message(codebase, f'type={name!r}')

    def build(*args, **kwargs):
        raise ImportError(message)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f'Placeholder: {message}.'
    registry.register_module(name=name, module=build, force=True)


def register_lazy(name: str, codebase: str, load: Callable[[], type], registry=MODELS) -> None:
    """Register ``name`` for a class built on ``codebase`` without importing the codebase now.

    Args:
        name (str): the registered name (the ``type`` of a config).
        codebase (str): 'mmdet', 'mmseg' or 'mmpretrain'.
        load (Callable[[], type]): imports the class (and so the codebase) and returns it; called on the
            first build.
        registry: where to register. Defaults to mmengine's root ``MODELS``.

    When ``codebase`` is importable the registry holds a factory ``build_<name>(**kwargs) ->
    load()(**kwargs)``; a module that registers the real class under the same name with ``force=True``
    replaces the factory once it is imported. Otherwise a :func:`register_missing` placeholder.
    """
    if not codebase_available(codebase):
        register_missing(name, codebase, registry)
        return

    def build(*args, **kwargs):
        return load()(*args, **kwargs)

    build.__name__ = build.__qualname__ = f'build_{name}'
    build.__doc__ = f'Builds ``{name}`` (imports {codebase} on first use).'
    registry.register_module(name=name, module=build, force=True)

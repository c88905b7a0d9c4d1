"""The model index of dgmn_mm and its registration into mmpretrain's model hub.

``model-index.yml`` (top level of the repository, shipped as ``dgmn_mm/.mim/model-index.yml``) imports one
``metafile.yml`` per model family (``configs/<codebase>/<family>/metafile.yml``, written by
``tools/misc/gen_metafiles.py``). ``mim search dgmn_mm`` reads it. The classifiers (the metafiles under
``configs/mmpretrain/``) are also registered into ``mmpretrain.apis.ModelHub`` when dgmn_mm is imported
with mmpretrain installed, so that::

    import dgmn_mm
    import mmpretrain
    mmpretrain.list_models('*dgmn2*')
    model = mmpretrain.get_model('dgmn2-tiny_8xb128_in1k')
    mmpretrain.ImageClassificationInferencer('dgmn2-tiny_8xb128_in1k', pretrained=False)

work by name. The official DGMN2 checkpoints are Google Drive pages, which mmengine cannot download: pass a
local (converted) file as ``pretrained=PATH``.
"""
import glob
import os.path as osp
from typing import List

__all__ = ['is_direct_download', 'mim_root', 'model_index_path', 'metafiles', 'register_mmpretrain_models']

_REGISTERED: List[str] = []


def mim_root() -> str:
    """``dgmn_mm/.mim``: symlinks to the repository's configs, tools and model index in a checkout, copies
    in a wheel."""
    return osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim')


def model_index_path() -> str:
    return osp.join(mim_root(), 'model-index.yml')


def metafiles(codebase: str = '*') -> List[str]:
    """The metafiles of one codebase folder ('mmpretrain', 'mmdet', 'mmseg') or of all ('*')."""
    return sorted(glob.glob(osp.join(mim_root(), 'configs', codebase, '*', 'metafile.yml')))


def is_direct_download(url: str) -> bool:
    """Whether mmengine's ``load_checkpoint`` can fetch ``url`` (not a Google Drive viewer page)."""
    return not ('drive.google.com' in url or url.endswith(('/view', 'usp=sharing')))


def register_mmpretrain_models() -> List[str]:
    """Register the classifiers of ``configs/mmpretrain/*/metafile.yml`` into ``mmpretrain.apis.ModelHub``.

    The official DGMN2 weights are Google Drive pages, which mmengine cannot download: their hub entries get
    no ``weights`` (``pretrained=True`` then builds the model with a warning instead of fetching a web
    page); pass the downloaded and converted file as ``pretrained=PATH``. Idempotent; returns the registered model names (``[]`` when there is nothing to register).
    """
    from mmpretrain.apis import ModelHub
    from modelindex.load_model_index import load
    names = []
    for path in metafiles('mmpretrain'):
        index = load(path)
        index.build_models_with_collections()
        new = [m.name for m in index.models if not ModelHub.has(m.name.lower())]
        if len(new) == len(index.models):
            ModelHub.register_model_index(path, config_prefix=mim_root())
        elif new:  # partially registered before (should not happen): register what is missing by hand
            for m in index.models:
                if m.name in new:
                    m.config = ModelHub._expand_config_path(m, mim_root())
                    ModelHub._models_dict[m.name.lower()] = m
        for m in index.models:
            entry = ModelHub._models_dict[m.name.lower()]
            if entry.weights and not is_direct_download(entry.weights):
                entry.weights = None  # a web page: ``pretrained=True`` would fetch HTML; pass a local file
        names += [m.name for m in index.models]
    _REGISTERED[:] = names
    return names

"""dgmn_mm: dynamic graph message passing (DGMN, DGMN2) and dynamic token routing (DiT) for OpenMMLab.

Importing the package registers every model and hook into mmengine's root registries (see
:mod:`dgmn_mm.registry`), so configs only need::

    custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

mmdet, mmsegmentation and mmpretrain are optional (extras ``dgmn_mm[mmdet]``, ``[mmseg]``, ``[mmpretrain]``,
``[all]``): what needs a missing codebase is registered as a placeholder that names the extra. With
mmpretrain installed, the classifiers of the model index are also registered into mmpretrain's model hub
(``mmpretrain.list_models('*dgmn2*')``, ``mmpretrain.get_model('dgmn2-tiny_8xb128_in1k')``).
"""
__version__ = '0.1.0'

from . import apis, engine, models  # noqa: E402,F401  (registration side effects)
from .registry import codebase_available  # noqa: E402

if codebase_available('mmpretrain'):
    try:
        apis.register_mmpretrain_models()
    except Exception as e:  # a broken model index must not break the import of the models
        import warnings
        warnings.warn(f'dgmn_mm: the classifiers were not registered into mmpretrain\'s model hub ({e!r})')

"""dgmn_mm: dynamic graph message passing (DGMN, DGMN2) and dynamic token routing (DiT) for OpenMMLab.

Importing the package registers every model and hook into mmengine's root registries (see
:mod:`dgmn_mm.registry`), so configs only need::

    custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)
"""
__version__ = '0.1.0'

from . import engine, models  # noqa: E402,F401  (registration side effects)

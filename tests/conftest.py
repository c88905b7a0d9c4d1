import os

import pytest
import torch

import dgmn_mm  # noqa: F401  (registers everything)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CPP_KERNEL_MARKER = ('cpp_kernel: needs the compiled C++ kernel of the sampled attention; skipped with the '
                     'import error as the reason when it is not built')


def pytest_configure(config):
    config.addinivalue_line('markers', CPP_KERNEL_MARKER)


def cpp_kernel_missing_reason():
    """None when the C++ kernel imports, else the skip reason: the import error and how to build it."""
    from dgmn_mm.ops import backend as ob
    if ob.load_extension() is not None:
        return None
    return f"the C++ kernel is not built ({ob.import_error('cpp')}); {ob.BUILD_HINT}"


def pytest_runtest_setup(item):
    # cases marked ``cpp_kernel`` (e.g. ``pytest.param('cpp', marks=pytest.mark.cpp_kernel)``) are collected
    # on every machine and show as SKIPPED with the import error when the kernel is missing
    if item.get_closest_marker('cpp_kernel') is not None:
        reason = cpp_kernel_missing_reason()
        if reason is not None:
            pytest.skip(reason)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope='session')
def make_image_folder():
    """A function ``make(root, size)`` writing ImageNet-style folders ``root/{train,val}/{a,b}/<i>.png`` of
    random ``size`` x ``size`` images (2 training and 1 validation image per class, numpy seed 0) for the
    tools' runs (mmpretrain's ``CustomDataset`` reads them); returns ``str(root)``."""

    def make(root, size):
        import cv2
        import numpy as np
        rng = np.random.default_rng(0)
        for split, per_class in (('train', 2), ('val', 1)):
            for cls in ('a', 'b'):
                os.makedirs(os.path.join(root, split, cls))
                for i in range(per_class):
                    cv2.imwrite(os.path.join(root, split, cls, f'{i}.png'),
                                rng.integers(0, 256, (size, size, 3), np.uint8))
        return str(root)

    return make


@pytest.fixture
def fresh_backends(monkeypatch):
    """Forget the loaded sampled-attention backends and ``DGMN_MM_ATTN_BACKEND`` before and after the test
    (tests hide modules to simulate missing kernels); yields ``monkeypatch``."""
    from dgmn_mm.ops import backend as ob
    monkeypatch.delenv(ob.ENV_VAR, raising=False)
    ob._reset_for_tests()
    yield monkeypatch
    ob._reset_for_tests()


@pytest.fixture(scope='module')
def one_thread():
    """One intra-op thread for a module's tests (``pytestmark = pytest.mark.usefixtures('one_thread')``),
    restored afterwards. The tests' tensors are tiny and the test machines' cores shared: intra-op threads
    oversubscribe them (measured: a ResNet-50 forward at 64x64 took 3.4 s with 2 threads under load, 0.19 s
    with 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

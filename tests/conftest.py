import os

import pytest
import torch

import dgmn_mm  # noqa: F401  (registers everything)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CPP_KERNEL_MARKER = ('cpp_kernel: needs the compiled C++ kernel of the sampled attention; skipped with the '
                     'import error as the reason when it is not built')


def pytest_configure(config):
    config.addinivalue_line('markers', CPP_KERNEL_MARKER)


# ``pytest -m "not slow"`` (``make test-fast``) runs representative cases of these parametrised tests: the
# cases whose id contains one of the given texts (the first case if none does); their other cases (bigger
# models and configs, the same behaviour on the slower backend) are marked slow and run in ``make test``.
ONE_FAST_CASE = {
    'test_config_builds': ('mmpretrain/dgmn2/dgmn2-tiny_8xb128', 'configs/mmpretrain/dit/dit-b1_'),
    'test_train_step_and_predict_on_tiny_inputs': ('retinanet_dgmn2-tiny', ),
    'test_every_official_kind_loads_strictly_into_its_config': ('imagenet', ),
    'test_every_official_imagenet_key_maps_to_one_of_ours': ('tiny', ),
    'test_param_count_equals_official': ('tiny', ),
    'test_output_shapes': ('hw2', ),  # every output mode at 33 x 33 (224 x 224 and 97 x 131 in make test)
    'test_demo_configs_build_and_run': ('mmpretrain', ),
    'test_mmdet_config_builds_and_runs': ('mask-rcnn_r50-dgmn-c5_', ),
    'test_mmseg_config_builds_and_runs': ('dgmn-da_r101', ),
    'test_detectors_add_budget_loss': ('retinanet', ),
    'test_flops_counter_reproduces_pvtv2': ('b1', ),
    'test_params_match_paper': ('b1', ),
    'test_params_and_all_open_flops': ('b1', ),
    # numerical gradient checks: the C++ backend in the fast subset, the PyTorch backend's in make test
    'test_opcheck': ('cpp', ),
    'test_operator_gradcheck_fp64': ('cpp', ),
    'test_relpos_rows_operator': ('True-cpp', 'False-cpp'),
    'test_walk_gradient_matches_finite_differences': ('cpp', ),
    # real Runner checkpoints: mmpretrain's in the fast subset, mmdet's and mmseg's in make test
    'test_runner_checkpoint_needs_exactly_the_allow_list': ('mmpretrain', ),
    'test_runner_checkpoint_loads_weights_only': ('mmpretrain', ),
    'test_resume_and_load_from': ('mmpretrain', ),
    'test_static_relpos_onnx_matches_pytorch': (),
}
# whole tests marked slow here rather than with a decorator in their file: tables, whole-config sweeps, CLI
# tools in subprocesses, benchmarks, property sweeps
SLOW_TESTS = {
    'test_table6_within_5_percent',  # the FLOPs table, every variant at 224
    'test_table2_increments_match_the_paper',
    'test_get_flops_prints_the_paper_convention',
    'test_measured_numbers_match_the_tool',  # metafile FLOPs of every model
    'test_fully_b2_measured',
    'test_benchmark_tool_runs',
    'test_segmentation_recipes',  # every size of every head against the official recipe
    'test_retinanet_and_mask_rcnn_recipes',
    'test_pair_configs_differ_only_in_the_backbone',
    'test_mmpretrain_model_hub',
    'test_dit_any_size',  # hypothesis sweep of DiT sizes
    'test_import_without_any_codebase',  # fresh interpreters with blocked imports
    'test_import_with_mmseg_only',
    'test_import_does_not_load_the_codebases',
    'test_mim_locates_the_imported_package',  # mim on an installed copy, in subprocesses
    'test_mim_search_lists_every_model',
    'test_mim_search_filters',
    'test_mim_run_get_flops',
    'test_mim_train_then_test',
    'test_amp_config_bf16_training_step',  # training steps of whole detectors / segmentors under autocast
    'test_budget_loss_pulls_routed_fraction_to_mu',  # a DiT training loop
    'test_config_mu_is_paper_over_all_open',  # DiT routing budgets against the paper's tables
    'test_fixed_mask_ablations_cost_3_8_gflops',
    'test_scale_only_and_depth_only_budgets_are_reachable',
    'test_full_grid_cannot_meet_table1',
    'test_make_predict_batch_feeds_test_step',  # the speed benchmark's inputs through a whole model
    'test_kernels_compile_for_cuda',  # Triton compiles the kernels for a CUDA target
    'test_dgmn2_backbone_with_triton_backend',  # a whole backbone in the Triton interpreter
    'test_pytorch2onnx_dynamic_mmseg_upsample_follows_the_input',  # the export tool with onnxruntime
}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(config, items):
    groups = {}
    for item in items:
        name = getattr(item, 'originalname', item.name)
        if name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        elif name in ONE_FAST_CASE and hasattr(item, 'callspec'):
            groups.setdefault((str(item.path), name), []).append(item)
    for (_, name), cases in groups.items():
        keep = [c for c in cases if any(text in c.callspec.id for text in ONE_FAST_CASE[name])] or cases[:1]
        for case in cases:
            if case not in keep:
                case.add_marker(pytest.mark.slow)


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

"""Analysis of dgmn_mm models: parameters and FLOPs, inference speed, whole-model and DiT benchmarks.

The command-line tools in ``tools/analysis_tools/`` (``get_flops.py``, ``benchmark.py``,
``benchmark_models.py``, ``dit_flops.py``, ``benchmark_dit_skipping.py``) are thin wrappers around this
package; import it to use the same counters and timers from Python::

    from dgmn_mm.analysis import format_result, get_flops
    print(format_result(get_flops('configs/mmpretrain/dgmn2/dgmn2-tiny_8xb128_in1k.py'), breakdown=True))

Modules:

- :mod:`~dgmn_mm.analysis.complexity`: building a model and its input from a config, the DGMN2-aware FLOP
  counter (``impl`` and the paper's Table 6 ``paper`` convention) and its text report.
- :mod:`~dgmn_mm.analysis.speed`: images/s of a model's forward or ``test_step``.
- :mod:`~dgmn_mm.analysis.model_benchmark`: whole detectors / segmentors with DGMN2-Tiny vs PVTv2-b1.
- :mod:`~dgmn_mm.analysis.dit`: DiT's average hard-gate FLOPs and the speed of real token skipping.

The FLOP handles of the ``dgmn_mm::`` operators themselves live with the operators
(:mod:`dgmn_mm.ops.flops`) and are registered in mmengine's default table when ``dgmn_mm`` is imported.
"""
from .complexity import (CATEGORIES, DEFAULT_SHAPES, FVCORE_OFFICIAL, PAPER_TABLE6, build_model, count_flops,
                         einsum_macs_jit, format_result, get_flops, grid_sampler_jit, input_shape, load_config,
                         make_inputs, model_kind, padded_shape)
from .dit import (average_gate_flops, benchmark_skipping, build_dit_model, format_skipping_table,
                  iter_images, time_pair)
from .model_benchmark import (BACKBONES, MODEL_NAMES, load_pair_config, pairs_table, run_pairs)
from .speed import benchmark, make_predict_batch

__all__ = [
    'PAPER_TABLE6', 'FVCORE_OFFICIAL', 'DEFAULT_SHAPES', 'CATEGORIES', 'einsum_macs_jit', 'grid_sampler_jit',
    'load_config', 'build_model', 'model_kind', 'padded_shape', 'make_inputs', 'input_shape', 'count_flops',
    'get_flops', 'format_result', 'benchmark', 'make_predict_batch', 'MODEL_NAMES', 'BACKBONES',
    'load_pair_config', 'run_pairs', 'pairs_table', 'build_dit_model', 'iter_images', 'average_gate_flops',
    'time_pair', 'benchmark_skipping', 'format_skipping_table'
]

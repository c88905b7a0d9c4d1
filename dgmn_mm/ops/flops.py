"""FLOP handles of the ``dgmn_mm::`` operators for mmengine's jit analyzer (``mmengine.analysis``).

Registered into mmengine's default handle table when :mod:`dgmn_mm.ops` is imported, so
``mmengine.analysis.FlopAnalyzer`` / ``get_model_complexity_info`` (and upstream ``get_flops`` tools) count
the fused attention like its reference path. Counts are multiply-accumulates (fvcore convention):

* ``dgmn_mm::sampled_attention``: ``B N K C (2 * 4 + 1 + 1)`` = bilinear sampling of keys and values (4
  corner weights each; mmengine counts ``aten::grid_sampler`` the same way), q . k_t and sum_t a_t v_t;
* ``dgmn_mm::relpos_rows``: ``B N K C`` (q . rows, the K used rows);
* ``dgmn_mm::sampled_attention_backward``: twice the forward (not traced in inference counts).
"""
import math
from typing import Any, List

from .geometry import NUM_SAMPLES


def _shape(value) -> List[int]:
    return value.type().sizes()


def sampled_attention_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    B, N, C3 = _shape(inputs[0])
    return B * N * NUM_SAMPLES * (C3 // 3) * (2 * 4 + 1 + 1)


def sampled_attention_backward_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    B, N, C3 = _shape(inputs[1])
    return 2 * B * N * NUM_SAMPLES * (C3 // 3) * (2 * 4 + 1 + 1)


def relpos_rows_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    return math.prod(_shape(outputs[0])) * _shape(inputs[1])[2]  # (B, h, N, K) outputs of d MACs each


FLOP_HANDLES = {
    'dgmn_mm::sampled_attention': sampled_attention_flop_jit,
    'dgmn_mm::sampled_attention_backward': sampled_attention_backward_flop_jit,
    'dgmn_mm::relpos_rows': relpos_rows_flop_jit,
}


def register_mmengine_flop_handles() -> bool:
    """Add :data:`FLOP_HANDLES` to mmengine's default table (new analyzers pick them up). False without
    mmengine."""
    try:
        from mmengine.analysis import complexity_analysis
    except ImportError:
        return False
    from mmengine.analysis.jit_handles import generic_activation_jit
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.update(FLOP_HANDLES)
    # activations (mmengine's ActivationAnalyzer, also run by get_model_complexity_info): the output
    complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS.update(
        {name: generic_activation_jit() for name in ('dgmn_mm::sampled_attention', 'dgmn_mm::relpos_rows')})
    return True

"""PyTorch operators of dgmn_mm (``torch.ops.dgmn_mm.*``): the DGMN2 sampled attention and its RelPos rows.

See :mod:`dgmn_mm.ops.attention` (operators, PyTorch implementation), :mod:`dgmn_mm.ops.backend`
(C++ / Triton / PyTorch choice, ``DGMN_MM_ATTN_BACKEND``), :mod:`dgmn_mm.ops.geometry` (sampling and
RelPos maths shared with the backbone) and :mod:`dgmn_mm.ops.flops` (mmengine FLOP handles, registered
on import).
"""
from .backend import BackendUnavailableError, load_extension, resolve
from .flops import register_mmengine_flop_handles
from .geometry import NUM_SAMPLES, resize_rel_table, slot_rows, walk_to_grid
from .attention import (dgmn2_attention_flops, dgmn2_core_flops, relpos, relpos_rows_torch,
                                sampled_attention, sampled_attention_torch)

register_mmengine_flop_handles()

__all__ = ['BackendUnavailableError', 'NUM_SAMPLES', 'dgmn2_attention_flops', 'dgmn2_core_flops',
           'load_extension', 'register_mmengine_flop_handles', 'relpos', 'relpos_rows_torch', 'resize_rel_table',
           'resolve', 'sampled_attention', 'sampled_attention_torch', 'slot_rows', 'walk_to_grid']

"""Triton kernels of the DGMN2 sampled attention (forward and backward).

See :mod:`dgmn_mm.ops.triton.sampled_attention` for the kernel design. Importing this package needs
``triton``; it imports nothing from :mod:`dgmn_mm.models`.
"""
from .sampled_attention import sampled_attention_bwd, sampled_attention_fwd

__all__ = ['sampled_attention_fwd', 'sampled_attention_bwd']

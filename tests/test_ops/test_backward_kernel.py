"""The CPU kernel's SIMD paths and the closed-form RelPos gradient of the joined backward.

* the x86-64 builds of the C++ kernel (portable, ``-march=x86-64-v3``, ``-march=x86-64-v4``, the last with
  AVX-512 dot products reduced several at a time) give bit-identical forward outputs, softmax weights and
  gradients to the portable build, for head dims with and without the SIMD path and walks that leave the
  map (taps with some or no corners inside);
* :func:`~dgmn_mm.ops.geometry.combine_relpos_backward` equals ``torch.autograd.grad`` of
  :func:`~dgmn_mm.ops.geometry.combine_relpos` bit for bit in both modes, square and non-square maps.
"""
import importlib

import pytest
import torch

from dgmn_mm.ops import backend as ob
from dgmn_mm.ops.geometry import combine_relpos, combine_relpos_backward


def _builds():
    """(suffix, module) of the kernel builds this CPU runs, the portable one first."""
    try:
        mods = [('', importlib.import_module('dgmn_mm.ops._sampled_attention_cpp'))]
    except ImportError as e:
        pytest.skip(f'the portable C++ kernel does not import: {e}')
    for suffix in ob._cpu_variants():
        try:
            mods.append((suffix, importlib.import_module(f'dgmn_mm.ops._sampled_attention_cpp_{suffix}')))
        except ImportError:
            pass
    return mods


@pytest.mark.cpp_kernel
@pytest.mark.parametrize('B,H,W,nh,d,walk_scale', [(2, 9, 7, 2, 64, 0.3), (1, 6, 11, 3, 32, 2.5),
                                                     (2, 5, 5, 1, 64, 4.0), (1, 7, 6, 2, 16, 1.0),
                                                     (1, 4, 9, 1, 48, 1.0)])
def test_builds_are_bit_identical(B, H, W, nh, d, walk_scale):
    builds = _builds()
    if len(builds) < 2:
        pytest.skip('only the portable build runs on this CPU')
    g = torch.Generator().manual_seed(H * 100 + W)
    N, C = H * W, nh * d
    qkv = torch.randn(B, N, 3 * C, generator=g)
    walk = torch.randn(B, N, nh, 18, generator=g) * walk_scale
    pos = torch.randn(B, nh, N, 9, generator=g)
    gout = torch.randn(B, N, C, generator=g)
    scale = d ** -0.5

    def run(mod):
        out, attn = mod.forward(qkv, walk, pos, H, W, nh, scale)
        grads = mod.backward(gout, qkv, walk, attn, H, W, nh, scale, -1, True, True)
        return [out, attn, *grads]

    ref = run(builds[0][1])
    assert ref[0].abs().sum() > 0 and ref[3].abs().sum() > 0  # the outputs and walk gradients are not trivial
    for suffix, mod in builds[1:]:
        for name, a, b in zip(('out', 'attn', 'gqkv', 'gwalk', 'gpos'), ref, run(mod)):
            assert torch.equal(a, b), f'{suffix} build: {name} differs from the portable build'


@pytest.mark.parametrize('mode', ['official', 'corrected'])
@pytest.mark.parametrize('H,W', [(6, 6), (4, 7), (9, 3), (1, 5)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_combine_relpos_backward_equals_autograd(mode, H, W, dtype):
    g0 = torch.Generator().manual_seed(H * 10 + W)
    shape = (2, 3, H, W, 9)
    r_w = torch.randn(shape, generator=g0, dtype=dtype, requires_grad=True)
    r_h = torch.randn(shape, generator=g0, dtype=dtype, requires_grad=True)
    grad = torch.randn(shape, generator=g0, dtype=dtype)
    ref_w, ref_h = torch.autograd.grad(combine_relpos(r_w, r_h, mode), (r_w, r_h), grad)
    g_w, g_h = combine_relpos_backward(grad, mode)
    assert g_w.shape == shape and g_h.shape == shape
    assert torch.equal(g_w, ref_w) and torch.equal(g_h, ref_h)


def test_combine_relpos_backward_rejects_unknown_mode():
    with pytest.raises(ValueError, match="'official' or 'corrected'"):
        combine_relpos_backward(torch.zeros(1, 1, 2, 2, 9), 'other')

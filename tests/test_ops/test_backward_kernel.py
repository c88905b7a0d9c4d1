"""The CPU kernel's SIMD paths and the closed-form RelPos gradient of the joined backward.

* the x86-64 builds of the C++ kernel (portable, ``-march=x86-64-v3``, ``-march=x86-64-v4``, the last with
  AVX-512 dot products reduced several at a time) give bit-identical forward outputs, softmax weights,
  gradients and RelPos logits (``relpos_rows``) to the portable build, for head dims with and without the SIMD path and walks that leave the
  map (taps with some or no corners inside);
* ``relpos_rows_backward_pair`` (both RelPos terms of the joined backward in one pass) equals two
  ``relpos_rows_backward`` calls bit for bit;
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
    rows_w, rows_h = torch.randn(W, 9, d, generator=g), torch.randn(H, 9, d, generator=g)
    scale = d ** -0.5

    def run(mod):
        out, attn = mod.forward(qkv, walk, pos, H, W, nh, scale)
        grads = mod.backward(gout, qkv, walk, attn, H, W, nh, scale, -1, True, True)
        return [out, attn, *grads, mod.relpos_rows(qkv, rows_w, H, W, nh, True),
                mod.relpos_rows(qkv, rows_h, H, W, nh, False)]

    ref = run(builds[0][1])
    assert ref[0].abs().sum() > 0 and ref[3].abs().sum() > 0  # the outputs and walk gradients are not trivial
    for suffix, mod in builds[1:]:
        for name, a, b in zip(('out', 'attn', 'gqkv', 'gwalk', 'gpos', 'relpos_w', 'relpos_h'), ref, run(mod)):
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


@pytest.mark.cpp_kernel
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('B,H,W,nh,d,transpose_h', [(2, 5, 5, 2, 64, True), (2, 6, 4, 3, 32, False),
                                                    (1, 7, 7, 1, 12, True), (2, 3, 8, 2, 64, False)])
def test_relpos_pair_backward_equals_two_calls(dtype, B, H, W, nh, d, transpose_h):
    """``relpos_rows_backward_pair`` (both RelPos terms in one pass, the height term's gradient read
    transposed in place) gives the values of two accumulating ``relpos_rows_backward`` calls, bit for bit."""
    ext = ob.load_extension()
    g0 = torch.Generator().manual_seed(B * 1000 + H * 10 + W)
    N, C = H * W, nh * d
    qkv = torch.randn(B, N, 3 * C, generator=g0, dtype=dtype)
    rows_w = torch.randn(W, 9, d, generator=g0, dtype=dtype)
    rows_h = torch.randn(H, 9, d, generator=g0, dtype=dtype)
    g_w = torch.randn(B, nh, N, 9, generator=g0, dtype=dtype)
    g_h_src = g_w if transpose_h else torch.randn(B, nh, N, 9, generator=g0, dtype=dtype)
    g_h = (g_h_src.view(B, nh, H, W, 9).transpose(2, 3).reshape(B, nh, N, 9).contiguous() if transpose_h
           else g_h_src)
    into = torch.randn(B, N, 3 * C, generator=g0, dtype=dtype)
    ref = into.clone()
    _, ref_w = ext.relpos_rows_backward(g_w, qkv, rows_w, H, W, nh, True, True, True, True, ref)
    _, ref_h = ext.relpos_rows_backward(g_h, qkv, rows_h, H, W, nh, False, True, True, True, ref)
    out = into.clone()
    grows_w, grows_h = ext.relpos_rows_backward_pair(g_w, g_h_src, transpose_h, qkv, rows_w, rows_h, H, W, nh, True,
                                                     True, True, out)
    assert not torch.equal(out, into)
    assert torch.equal(out, ref) and torch.equal(grows_w, ref_w) and torch.equal(grows_h, ref_h)
    # only the tables: the qkv gradient is left alone
    out2 = into.clone()
    none_w, grows_h2 = ext.relpos_rows_backward_pair(g_w, g_h_src, transpose_h, qkv, rows_w, rows_h, H, W, nh, False,
                                                     False, True, out2)
    assert none_w is None and torch.equal(out2, into) and torch.equal(grows_h2, ref_h)


@pytest.mark.cpp_kernel
def test_relpos_pair_backward_rejects_transpose_of_a_non_square_map():
    ext = ob.load_extension()
    qkv, g = torch.randn(1, 12, 24), torch.randn(1, 1, 12, 9)
    with pytest.raises(RuntimeError, match='transpose_h needs H == W'):
        ext.relpos_rows_backward_pair(g, g, True, qkv, torch.randn(4, 9, 8), torch.randn(3, 9, 8), 3, 4, 1, True, True,
                                      True, torch.randn(1, 12, 24))

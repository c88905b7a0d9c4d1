"""DGMN2 attention: the fast path (operators on the C++, Triton-interpreter and PyTorch backends) equals the
reference path.

Outputs and gradients (input, qkv / proj / walk-predictor weights, RelPos tables) are compared on random
inputs, odd and degenerate map sizes, batch > 1, both RelPos modes, walks large enough to leave the map.
Timings are not asserted; the benchmark tool is run in its quick mode.
"""
import csv
import os
import subprocess
import sys

import pytest
import torch

from dgmn_mm.models.backbones.dgmn2 import DGMN2, DGMN2Attention
from dgmn_mm.models.layers import sampled_attention as sa

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# a missing C++ kernel shows as skipped cases with the reason, not as cases that disappear
BACKENDS = ['torch', pytest.param('cpp', marks=pytest.mark.cpp_kernel)]  # reason: the import error
BACKEND_ENV = 'DGMN_MM_ATTN_BACKEND'


@pytest.fixture
def use_backend(monkeypatch):
    """use_backend(name): force the operators' backend for the rest of the test."""
    def _use(name):
        if name is None:
            monkeypatch.delenv(BACKEND_ENV, raising=False)
        else:
            monkeypatch.setenv(BACKEND_ENV, name)
    return _use
TOL = 1e-5  # fp32


def make_attention(C, h, mode, dtype=torch.float32, walk_std=0.5, walk_bias=1.0):
    m = DGMN2Attention(C, h, (5, 5), relpos_mode=mode, attn_impl='reference').to(dtype)
    with torch.no_grad():
        torch.nn.init.normal_(m.qkv.weight, std=0.1)
        torch.nn.init.normal_(m.proj.weight, std=0.1)
        torch.nn.init.normal_(m.walk.weight, std=walk_std)  # walks of a few pixels, some off the map
        torch.nn.init.uniform_(m.walk.bias, -walk_bias, walk_bias)
    return m


def run(m, x, hw, impl, backend=None):
    """Output and gradients of every parameter and of x for a fixed random upstream gradient."""
    m.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    if impl == 'reference':
        y = m.forward_reference(x, hw)
    else:
        prev = os.environ.get(BACKEND_ENV)
        os.environ[BACKEND_ENV] = backend or 'torch'
        try:
            y = sa.dgmn2_attention_fast(m, x, hw)
        finally:
            os.environ.pop(BACKEND_ENV) if prev is None else os.environ.__setitem__(BACKEND_ENV, prev)
    g = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    (y * g).sum().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    grads['x'] = x.grad.clone()
    return y.detach(), grads


def assert_same(a, b, tol):
    (ya, ga), (yb, gb) = a, b
    assert (ya - yb).abs().max().item() <= tol, f'outputs differ by {(ya - yb).abs().max().item():.3g}'
    assert ga.keys() == gb.keys()
    for k in ga:
        # gradients of weights are sums over all tokens: compare at the 1e-5 level relative to their scale
        err = (ga[k] - gb[k]).abs().max().item()
        scale = max(1., ga[k].abs().max().item())
        assert err <= tol * scale, f'grad of {k} differs by {err:.3g} (scale {scale:.3g})'
        assert ga[k].abs().max() > 0 or k.endswith('bias'), f'grad of {k} is all zero: test is vacuous'


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('B,C,h,H,W,mode', [
    (2, 32, 2, 9, 17, 'official'),   # odd, non-square: official height term is resized
    (1, 64, 1, 7, 7, 'official'),    # square (official transposition without resize), d = 64
    (2, 24, 3, 5, 11, 'corrected'),
    (2, 20, 2, 1, 13, 'official'),   # 1 x N
    (1, 16, 1, 13, 1, 'corrected'),  # N x 1
    (3, 8, 1, 2, 2, 'official'),
])
def test_fast_equals_reference_fp32(backend, B, C, h, H, W, mode):
    m = make_attention(C, h, mode)
    x = torch.randn(B, H * W, C)
    assert_same(run(m, x, (H, W), 'reference'), run(m, x, (H, W), 'fast', backend), TOL)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('mode', ['official', 'corrected'])
def test_fast_equals_reference_fp64(backend, mode):
    m = make_attention(16, 2, mode, torch.float64, walk_std=2.0, walk_bias=3.0)  # far walks, many off-map
    x = torch.randn(2, 6 * 10, 16, dtype=torch.float64)
    assert_same(run(m, x, (6, 10), 'reference'), run(m, x, (6, 10), 'fast', backend), 1e-10)


@pytest.mark.parametrize('backend', BACKENDS)
def test_walk_gradient_matches_finite_differences(backend, use_backend):
    """Autograd through the walks (grid positions) of the fast path, checked numerically in fp64."""
    m = make_attention(8, 2, 'official', torch.float64)
    H, W = 3, 4
    x = torch.randn(1, H * W, 8, dtype=torch.float64)
    # the torch backend is plain autograd: check its walk gradient only (the numerical Jacobian is slow)
    full = backend == 'cpp'
    qkv = m.qkv(x).detach().requires_grad_(full)
    walk = (torch.randn(1, H * W, 2, 18, dtype=torch.float64) * 0.7).requires_grad_(True)
    pos = torch.randn(1, 2, H * W, 9, dtype=torch.float64, requires_grad=full)
    use_backend(backend)
    fn = sa.sampled_attention if backend == 'cpp' else sa.sampled_attention_torch
    assert torch.autograd.gradcheck(lambda a, b, c: fn(a, b, c, (H, W), 2, m.scale), (qkv, walk, pos),
                                    eps=1e-6, atol=1e-6)


@pytest.mark.parametrize('backend', BACKENDS)
def test_fast_module_default_and_train_mode(backend, use_backend):
    """'fast' is the default of the layer and of the backbone; train mode (dropout p=0) matches too."""
    assert DGMN2Attention(16, 2, (4, 4)).attn_impl == 'fast'
    torch.manual_seed(1)
    ref = DGMN2(arch=dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 2, 1, 2),
                          mlp_ratios=(2, 2, 2, 2)), attn_impl='reference')
    fast = DGMN2(arch=dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 2, 1, 2),
                           mlp_ratios=(2, 2, 2, 2)))
    fast.load_state_dict(ref.state_dict())
    assert all(mod.attn_impl == 'fast' for mod in fast.modules() if isinstance(mod, DGMN2Attention))
    img = torch.randn(2, 3, 37, 50)
    outs = []
    for model in (ref, fast):
        model.train()
        model.zero_grad()
        use_backend(backend)
        feats = model(img)
        sum((f * f).mean() for f in feats).backward()
        outs.append(([f.detach() for f in feats], {n: p.grad.clone() for n, p in model.named_parameters()
                                                   if p.grad is not None}))
    (fr, gr), (ff, gf) = outs
    for a, b in zip(fr, ff):
        assert (a - b).abs().max() <= TOL
    assert gr.keys() == gf.keys() and any('rel_pos' in k for k in gr) and any('attn.walk' in k for k in gr)
    for k in gr:
        assert (gr[k] - gf[k]).abs().max() <= 1e-4 * max(1., gr[k].abs().max().item()), k


def test_attention_dropout_uses_torch_backend():
    m = DGMN2Attention(16, 2, (4, 4), attn_drop=0.5).train()
    x = torch.randn(1, 20, 16)
    y = m(x, (4, 5))
    assert y.shape == x.shape and torch.isfinite(y).all()
    m.eval()
    ref = m.forward_reference(x, (4, 5))
    assert (m(x, (4, 5)) - ref).abs().max() <= TOL


@pytest.mark.parametrize('backend', BACKENDS)
def test_autocast_bf16(backend, use_backend):
    m = make_attention(32, 2, 'official')
    x = torch.randn(1, 6 * 7, 32)
    with torch.no_grad():
        ref = m.forward_reference(x, (6, 7))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            use_backend(backend)
            y = sa.dgmn2_attention_fast(m, x, (6, 7))
    assert y.dtype == torch.bfloat16
    assert (y.float() - ref).abs().max() <= 5e-2 * max(1., ref.abs().max().item())


def test_flop_formula():
    # linears (qkv, proj) + walks + core; core per query and head: 2 K (2d RelPos + 8d sampling + d + d)
    N, C, h = 100, 64, 1
    d, K = 64, 9
    expected = 2 * N * C * 4 * C + 2 * N * h * d * 2 * K + 2 * N * h * K * 12 * d
    assert sa.dgmn2_attention_flops(N, C, h) == expected


@pytest.mark.slow  # the benchmark tool in a subprocess
def test_benchmark_quick(tmp_path):
    out = tmp_path / 'bench'
    cmd = [sys.executable, os.path.join(REPO, 'tools', 'analysis_tools', 'benchmark_attention.py'), '--quick',
           '--sizes', '32x48', '--runs', '1', '--warmup', '0', '--threads', '1', '--out', str(out)]
    subprocess.run(cmd, check=True, cwd=REPO, timeout=600, stdout=subprocess.DEVNULL)
    with open(out / 'attention_benchmark.csv') as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == ['mode', 'scope', 'impl', 'batch', 'height', 'width', 'tokens', 'ms_median',
                                    'peak_mb', 'gflops']
    assert {r['mode'] for r in rows} == {'infer'} and {r['batch'] for r in rows} == {'1'}
    seen = {(r['scope'], r['impl']) for r in rows}
    for scope in ('layer', 'backbone'):
        for impl in ('reference', 'fast', 'full', 'pvtv2-sra', 'swin-window'):
            assert (scope, impl) in seen
    for r in rows:
        assert float(r['ms_median']) > 0 and float(r['gflops']) > 0
    ref = [r for r in rows if r['impl'] == 'reference']
    fast = {(r['scope'], r['height']): r for r in rows if r['impl'] == 'fast'}
    for r in ref:  # same maths, same FLOPs
        assert r['gflops'] == fast[(r['scope'], r['height'])]['gflops']
    assert (out / 'attention_benchmark.png').stat().st_size > 0
    assert (out / 'summary.json').exists()

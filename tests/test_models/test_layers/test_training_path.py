"""The chunked LN + FFN + residual training form of DGMN2Block against the plain autograd form.

The plain form is the same block with ``chunked_ffn_train = False``; outputs and input gradients must agree
to 1e-5 and parameter gradients to 1e-5 x max(1, |grad|) (the chunked form sums weight gradients chunk by
chunk).
"""
import copy

import pytest
import torch

from dgmn_mm.models.backbones.dgmn2 import DGMN2, DGMN2Block, _ChunkedNormFFNResidual


def _pair(model):
    plain = copy.deepcopy(model)
    for m in plain.modules():
        if isinstance(m, DGMN2Block):
            m.chunked_ffn_train = False
    return plain


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_grads_close(ga, gb, tol=1e-5):
    assert ga.keys() == gb.keys() and ga
    for n in ga:
        scale = max(1., gb[n].abs().max().item())
        err = (ga[n] - gb[n]).abs().max().item()
        assert err <= tol * scale, f'{n}: {err} > {tol} x {scale}'


@pytest.mark.parametrize('chunk,shape', [(64, (2, 9, 13)), (4096, (1, 7, 5)), (50, (3, 8, 8))])
def test_block_matches_plain_form(chunk, shape):
    torch.manual_seed(0)
    B, H, W = shape
    blk = DGMN2Block(32, 2, 4, (8, 8), attn_impl='reference').train()
    for p in blk.parameters():  # non-trivial LN affine parameters and biases
        p.data.add_(0.1 * torch.randn_like(p))
    blk.train_chunk_tokens = chunk
    blk.chunked_ffn_min_bytes = 0
    plain = _pair(blk)
    x = torch.randn(B, H * W, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = blk(x, (H, W)), plain(x2, (H, W))
    assert y.shape == (B, H * W, 32)
    torch.testing.assert_close(y, y2, rtol=0, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=1e-5)
    _assert_grads_close(_grads(blk), _grads(plain))


def test_function_is_used_and_saves_only_the_input():
    """The chunked form really runs in training (not silently the plain one) and keeps no hidden tensor."""
    torch.manual_seed(0)
    blk = DGMN2Block(16, 1, 8, (4, 4), attn_impl='reference').train()
    x = torch.randn(2, 36, 16, requires_grad=True)
    assert blk(x, (6, 6)).grad_fn.name() == 'AddBackward0'  # small map: hidden < 32 MB, plain form
    blk.chunked_ffn_min_bytes = 2 * 36 * 128 * 4  # exactly this map's hidden size
    y = blk(x, (6, 6))
    assert type(y.grad_fn).__name__ == 'ViewBackward0'
    node = y.grad_fn.next_functions[0][0]
    assert 'ChunkedNormFFNResidual' in type(node).__name__
    # x itself and the parameters; never LN(x) or the (M, 8C) hidden maps
    assert [tuple(t.shape) for t in node.saved_tensors] == [(72, 16), (16, ), (16, ), (128, 16), (128, ),
                                                             (16, 128), (16, )]
    blk.chunked_ffn_train = False
    assert 'ChunkedNormFFNResidual' not in repr(blk(x, (6, 6)).grad_fn.name())


def test_plain_form_kept_where_the_chunked_one_does_not_apply(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr(DGMN2Block, 'chunked_ffn_min_bytes', 0)
    blk = DGMN2Block(16, 1, 4, (4, 4), drop=0.1, attn_impl='reference').train()
    x = torch.randn(1, 16, 16, requires_grad=True)
    assert blk(x, (4, 4)).grad_fn.name() == 'AddBackward0'  # dropout in training
    blk = DGMN2Block(16, 1, 4, (4, 4), drop_path=0.1, attn_impl='reference').train()
    assert blk(x, (4, 4)).grad_fn.name() == 'AddBackward0'  # drop path in training
    blk = DGMN2Block(16, 1, 4, (4, 4), attn_impl='reference').train()
    blk.chunked_ffn_min_bytes = 0
    with torch.autocast('cpu', torch.bfloat16):
        assert blk(x, (4, 4)).grad_fn.name() == 'AddBackward0'  # autocast
    blk.eval()  # eval with autograd (e.g. gradients of an input) takes the chunked form; drop path is off
    assert 'ChunkedNormFFNResidual' in blk(x, (4, 4)).grad_fn.next_functions[0][0].name()


def test_frozen_parameters_and_no_input_grad():
    """needs_input_grad is honoured: frozen LN/FFN parameters get no gradient, the others the plain ones."""
    torch.manual_seed(0)
    blk = DGMN2Block(16, 1, 4, (4, 4), attn_impl='reference').train()
    blk.chunked_ffn_min_bytes = 0
    for p in list(blk.norm2.parameters()) + list(blk.ffn.fc1.parameters()):
        p.requires_grad_(False)
    plain = _pair(blk)
    x = torch.randn(2, 20, 16)
    blk(x, (4, 5)).square().sum().backward()
    plain(x, (4, 5)).square().sum().backward()
    assert blk.ffn.fc1.weight.grad is None and blk.norm2.weight.grad is None
    _assert_grads_close(_grads(blk), _grads(plain))


def test_function_gradcheck_fp64():
    torch.manual_seed(0)
    C, R, M = 4, 8, 7
    args = [torch.randn(M, C), 1 + 0.1 * torch.randn(C), 0.1 * torch.randn(C), 0.5 * torch.randn(R * C, C),
            0.1 * torch.randn(R * C), 0.5 * torch.randn(C, R * C), 0.1 * torch.randn(C)]
    args = [a.double().requires_grad_() for a in args]
    assert torch.autograd.gradcheck(lambda *a: _ChunkedNormFFNResidual.apply(*a, 1e-6, 3), args)


def test_backbone_train_step_matches_plain_form():
    """A whole DGMN2-Tiny backbone in train mode (BN in training): outputs and every
    parameter gradient as with the plain form."""
    torch.manual_seed(0)
    model = DGMN2(arch='tiny', attn_impl='reference').train()
    for blk in (m for m in model.modules() if isinstance(m, DGMN2Block)):
        blk.train_chunk_tokens = 100  # several chunks at every stage
        blk.chunked_ffn_min_bytes = 0
    plain = _pair(model)
    x = torch.randn(2, 3, 64, 96)
    outs, outs2 = model(x), plain(x)
    for o, o2 in zip(outs, outs2):
        torch.testing.assert_close(o, o2, rtol=0, atol=1e-5)
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs2).backward()
    _assert_grads_close(_grads(model), _grads(plain))


@pytest.mark.slow
def test_benchmark_attention_train_mode(tmp_path):
    """``--mode train`` times forward + backward steps and writes its own CSV with mode and batch."""
    import csv
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    out = tmp_path / 'bench'
    cmd = [sys.executable, os.path.join(repo, 'tools', 'analysis_tools', 'benchmark_attention.py'), '--mode',
           'train', '--batch', '2', '--sizes', '32x48', '--impls', 'reference,fast,pvtv2-sra', '--runs', '1',
           '--warmup', '0', '--threads', '1', '--no-plot', '--out', str(out)]
    subprocess.run(cmd, check=True, cwd=repo, timeout=600, stdout=subprocess.DEVNULL)
    with open(out / 'attention_benchmark_train.csv') as f:
        rows = list(csv.DictReader(f))
    assert {(r['scope'], r['impl']) for r in rows} == {(s, i) for s in ('layer', 'backbone')
                                                       for i in ('reference', 'fast', 'pvtv2-sra')}
    for r in rows:
        assert r['mode'] == 'train' and r['batch'] == '2' and r['tokens'] == str(8 * 12)
        assert float(r['ms_median']) > 0 and float(r['peak_mb']) > 0
    assert (out / 'summary_train.json').exists() and not (out / 'attention_benchmark.csv').exists()


@pytest.mark.slow
def test_benchmark_models_quick(tmp_path):
    """benchmark_models builds both backbones of a pair and times inference and training iterations."""
    import csv
    import os
    import subprocess
    import sys
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    cmd = [sys.executable, os.path.join(repo, 'tools', 'analysis_tools', 'benchmark_models.py'), '--quick',
           '--models', 'retinanet', '--threads', '1', '--out', str(tmp_path)]
    res = subprocess.run(cmd, check=True, cwd=repo, timeout=900, capture_output=True, text=True)
    assert '| retinanet | train | 128x128 (2) |' in res.stdout
    with open(tmp_path / 'models_benchmark.csv') as f:
        rows = list(csv.DictReader(f))
    assert {(r['backbone'], r['mode']) for r in rows} == {(b, m) for b in ('dgmn2-tiny', 'pvtv2-b1')
                                                          for m in ('infer', 'train')}
    assert all(float(r['ms_median']) > 0 and r['model'] == 'retinanet' for r in rows)


def test_buffer_cache_linear_same_values_and_reuse():
    from dgmn_mm.models.layers import buffer_cache as bc
    torch.manual_seed(0)
    cache = bc.BufferCache(min_bytes=0)
    lin = torch.nn.Linear(16, 48)
    x = torch.randn(2, 50, 16)
    a = cache.get('k', (2, 50, 48), torch.float32, 'cpu')
    b = cache.get('k', (3, 10, 48), torch.float32, 'cpu')  # smaller: a view of the same memory
    assert b.data_ptr() == a.data_ptr() and cache.nbytes() == 2 * 50 * 48 * 4
    c = cache.get('k', (3, 50, 48), torch.float32, 'cpu')  # larger: grows
    assert c.shape == (3, 50, 48) and cache.nbytes() == 3 * 50 * 48 * 4
    assert cache.get('small', (4, ), torch.float32, 'cpu').shape == (4, )
    cache.clear()
    assert cache.nbytes() == 0
    bc.clear_buffer_cache()
    with torch.no_grad():
        y1 = bc.cached_linear(lin, x, 'test')
        torch.testing.assert_close(y1, bc.linear_reference(lin, x), rtol=0, atol=0)
        if 2 * 50 * 48 * 4 >= bc.get_buffer_cache().min_bytes:
            assert bc.get_buffer_cache().nbytes() > 0
    big = torch.randn(1, 40000, 16)  # 40000 x 48 floats = 7.7 MB > 4 MB: cached
    with torch.no_grad():
        y2 = bc.cached_linear(lin, big, 'test')
        ptr = y2.data_ptr()
        torch.testing.assert_close(y2, bc.linear_reference(lin, big), rtol=0, atol=0)
        y3 = bc.cached_linear(lin, big * 2, 'test')
    assert y3.data_ptr() == ptr  # the same buffer, no new pages
    # with autograd the plain linear runs (the graph would keep the buffer alive across calls)
    y4 = bc.cached_linear(lin, big, 'test')
    assert y4.requires_grad and y4.data_ptr() != ptr
    bc.clear_buffer_cache()


def test_attention_qkv_uses_the_buffer_cache_in_inference_only():
    from dgmn_mm.models.backbones.dgmn2 import DGMN2Attention
    from dgmn_mm.models.layers import buffer_cache as bc
    torch.manual_seed(0)
    attn = DGMN2Attention(64, 1, (8, 8)).eval()
    x = torch.randn(1, 80 * 80, 64)  # qkv: 6400 x 192 floats = 4.9 MB, above the cache's 4 MB floor
    bc.clear_buffer_cache()
    y = attn(x, (80, 80))
    assert bc.get_buffer_cache().nbytes() == 0  # autograd on: plain Linear
    with torch.no_grad():
        y1 = attn(x, (80, 80))
        assert bc.get_buffer_cache().nbytes() == 6400 * 192 * 4
        y2 = attn(x, (80, 80))  # the buffer is reused: same result
        ref = attn.forward_reference(x, (80, 80))
    torch.testing.assert_close(y1, y.detach(), rtol=0, atol=0)
    torch.testing.assert_close(y2, y1, rtol=0, atol=0)
    torch.testing.assert_close(y1, ref, rtol=0, atol=1e-5)
    bc.clear_buffer_cache()


def test_attention_output_into_the_buffer_cache_in_inference():
    """With the C++ kernel, inference writes the sampled attention's (B, N, C) output into the buffer cache:
    same values as the operator's fresh output, the buffer is reused, and autograd keeps the operator."""
    from dgmn_mm.models.backbones.dgmn2 import DGMN2Attention
    from dgmn_mm.models.layers import buffer_cache as bc
    from dgmn_mm.models.layers import sampled_attention as sa
    from dgmn_mm.ops import backend
    if backend.resolve('cpu') != 'cpp' or not hasattr(backend.load_extension(), 'forward_into'):
        pytest.skip('C++ kernel with forward_into not loaded')
    torch.manual_seed(0)
    attn = DGMN2Attention(64, 2, (8, 8)).eval()
    H, W = 128, 130  # the (N, C) output is 4.3 MB, above the cache's 4 MB floor
    x = torch.randn(1, H * W, 64)
    bc.clear_buffer_cache()
    with torch.no_grad():
        y1 = attn(x, (H, W))
        cached = bc.get_buffer_cache().nbytes()
        assert cached == H * W * (192 + 64) * 4  # qkv and the attention output
        y2 = attn(x, (H, W))
        assert bc.get_buffer_cache().nbytes() == cached
        qkv = attn.qkv(x)
        walk = attn.walk(x.reshape(1, H * W, 2, 32))
        pos = sa.relpos(qkv, attn.rel_pos.rel_width, attn.rel_pos.rel_height, (H, W), 2, attn.rel_pos.mode)
        fresh = sa.sampled_attention(qkv, walk, pos, (H, W), 2, attn.scale)
        into = sa._sampled_attention_into_cache(qkv, walk, pos, H, W, 2, attn.scale)
    torch.testing.assert_close(into, fresh, rtol=0, atol=0)
    torch.testing.assert_close(y2, y1, rtol=0, atol=0)
    bc.clear_buffer_cache()
    y = attn(x.requires_grad_(), (H, W))  # autograd: the operator, nothing cached
    assert bc.get_buffer_cache().nbytes() == 0
    torch.testing.assert_close(y.detach(), y1, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match='pos must be'):
        with torch.no_grad():
            sa._sampled_attention_into_cache(qkv, walk, pos[:, :1], H, W, 2, attn.scale)


def test_gelu_forward_backward_kernel_matches_aten():
    """The C++ kernel's one-pass GELU + GELU gradient (AVX2 / AVX-512 builds) against F.gelu and
    gelu_backward: a few ulp of the outputs' scale, NaN stays NaN."""
    from dgmn_mm.ops import backend
    ext = backend.load_extension()
    if ext is None or not hasattr(ext, 'gelu_forward_backward'):
        pytest.skip('C++ kernel without gelu_forward_backward (not built, or a build below AVX2)')
    torch.manual_seed(0)
    h = torch.cat([torch.linspace(-40, 40, 80001), 3 * torch.randn(100000),
                   torch.tensor([0., -0., 1e-30, -1e-30, 1e-3, -1e-3, float('nan')])])
    g = torch.randn_like(h)
    a, gh = ext.gelu_forward_backward(h, g)
    ra, rgh = torch.nn.functional.gelu(h), torch.ops.aten.gelu_backward(g, h)
    fin = torch.isfinite(h)
    assert (a[fin] - ra[fin]).abs().le(2e-6 + 1e-6 * ra[fin].abs()).all()
    assert (gh[fin] - rgh[fin]).abs().le(2e-6 * (1 + g[fin].abs())).all()
    assert a[-1].isnan() and gh[-1].isnan()
    with pytest.raises(RuntimeError, match='float32'):
        ext.gelu_forward_backward(h.double(), g.double())
    with pytest.raises(RuntimeError, match='same shape'):
        ext.gelu_forward_backward(h, g[:-1])


def test_fast_chunked_backward_uses_the_gelu_kernel(monkeypatch):
    """The fast block's chunked backward takes the one-pass GELU kernel when it is there, and still matches
    the reference block's plain form."""
    import dgmn_mm.models.backbones.dgmn2 as D
    calls = []
    real = D._gelu_forward_backward_kernel

    def spy(x):
        fn = real(x)
        calls.append(fn is not None)
        return fn

    monkeypatch.setattr(D, '_gelu_forward_backward_kernel', spy)
    torch.manual_seed(0)
    fast = DGMN2Block(32, 2, 4, (8, 8), attn_impl='fast').train()
    ref = copy.deepcopy(fast)
    ref.attn.attn_impl, ref.ffn.onednn, ref.chunked_ffn_train = 'reference', False, False
    fast.chunked_ffn_min_bytes, fast.train_chunk_tokens = 0, 40
    x = torch.randn(2, 6 * 11, 32)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = fast(x1, (6, 11)), ref(x2, (6, 11))
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    # asked once (one chunked backward) when the fast form runs; the kernel is there when the C++ backend is
    assert calls == ([real(x) is not None] if D.onednn_linear_applies(x, fast.ffn.fc1.weight) else [])
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-5)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-5)
    _assert_grads_close(_grads(fast), _grads(ref))

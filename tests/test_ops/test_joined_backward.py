"""The CPU training path of the fast DGMN2 attention: the C++ ``relpos_rows_backward`` kernel and the joined
RelPos + sampled-attention backward (``_RelPosSampledAttentionCPU``).

* the kernel equals the einsum form of the RelPos gradients (q part and table rows), stores zero k / v
  parts, or adds into an existing gradient without touching its k / v parts (odd sizes, batch > 1, several
  heads, d = 64, 32 and others, fp32 and fp64);
* the joined backward gives the gradients of the separate operators (fp32 1e-5, fp64 1e-10), also when only
  some inputs need a gradient, and passes gradcheck;
* it runs exactly when it should: training with the C++ backend, not in inference, not with the PyTorch
  backend.
"""
import pytest
import torch

from dgmn_mm.models.backbones.dgmn2 import DGMN2Attention
from dgmn_mm.models.layers import sampled_attention as sa
from dgmn_mm.ops import backend as ob

pytestmark = pytest.mark.cpp_kernel  # skipped (with the import error) when the C++ kernel is not built


@pytest.fixture
def ext(monkeypatch):
    monkeypatch.setenv(ob.ENV_VAR, 'cpp')
    mod = ob.load_extension()
    if not hasattr(mod, 'relpos_rows_backward'):
        pytest.fail('the built C++ kernel is older than its source (no relpos_rows_backward): rebuild it')
    return mod


def einsum_grads(g, qkv, rows, H, W, nh, by_column):
    B, N, C3 = qkv.shape
    d = C3 // 3 // nh
    g5 = g.view(B, nh, H, W, 9)
    q = qkv[..., :C3 // 3].reshape(B, H, W, nh, d)
    if by_column:
        return (torch.einsum('bjyxt,xtd->byxjd', g5, rows).reshape(B, N, C3 // 3),
                torch.einsum('bjyxt,byxjd->xtd', g5, q))
    return (torch.einsum('bjyxt,ytd->byxjd', g5, rows).reshape(B, N, C3 // 3),
            torch.einsum('bjyxt,byxjd->ytd', g5, q))


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize('B,H,W,nh,d', [(2, 5, 7, 2, 64), (3, 9, 4, 3, 32), (1, 13, 11, 5, 12), (2, 1, 6, 1, 7)])
@pytest.mark.parametrize('by_column', [True, False])
def test_relpos_rows_backward_kernel(ext, dtype, tol, B, H, W, nh, d, by_column):
    g0 = torch.Generator().manual_seed(0)
    N, C = H * W, nh * d
    qkv = torch.randn(B, N, 3 * C, generator=g0, dtype=dtype)
    rows = torch.randn(W if by_column else H, 9, d, generator=g0, dtype=dtype)
    g = torch.randn(B, nh, N, 9, generator=g0, dtype=dtype)
    gq_ref, gr_ref = einsum_grads(g, qkv, rows, H, W, nh, by_column)
    # new gradient: q part written, k / v parts zero
    gqkv, grows = ext.relpos_rows_backward(g, qkv, rows, H, W, nh, by_column, True, True, False, torch.empty(0))
    assert gqkv.shape == qkv.shape and grows.shape == rows.shape
    assert (gqkv[..., :C] - gq_ref).abs().max().item() <= tol * max(1., gq_ref.abs().max().item())
    assert (grows - gr_ref).abs().max().item() <= tol * max(1., gr_ref.abs().max().item())
    assert torch.equal(gqkv[..., C:], torch.zeros_like(gqkv[..., C:]))
    # accumulate: added in place into the q part of an existing gradient, k / v untouched
    into = torch.randn(B, N, 3 * C, generator=g0, dtype=dtype)
    before = into.clone()
    out, none_rows = ext.relpos_rows_backward(g, qkv, rows, H, W, nh, by_column, True, False, True, into)
    assert out.data_ptr() == into.data_ptr() and none_rows is None
    assert torch.equal(into[..., C:], before[..., C:])
    expect = before[..., :C] + gq_ref
    assert (into[..., :C] - expect).abs().max().item() <= tol * max(1., expect.abs().max().item())
    # only the rows
    none_q, grows2 = ext.relpos_rows_backward(g, qkv, rows, H, W, nh, by_column, False, True, False, torch.empty(0))
    assert none_q is None and torch.equal(grows2, grows)


def test_relpos_rows_backward_kernel_rejects_bad_shapes(ext):
    qkv, rows, g = torch.randn(1, 12, 24), torch.randn(4, 9, 8), torch.randn(1, 1, 12, 9)
    with pytest.raises(RuntimeError, match='grad must be'):
        ext.relpos_rows_backward(torch.randn(1, 1, 12, 8), qkv, rows, 3, 4, 1, True, True, True, False, torch.empty(0))
    with pytest.raises(RuntimeError, match='into must be'):
        ext.relpos_rows_backward(g, qkv, rows, 3, 4, 1, True, True, True, True, torch.empty(1, 12, 23))


def make_attention(C, h, mode, dtype=torch.float32):
    torch.manual_seed(0)
    m = DGMN2Attention(C, h, (5, 5), relpos_mode=mode).to(dtype)
    with torch.no_grad():
        torch.nn.init.normal_(m.qkv.weight, std=0.1)
        torch.nn.init.normal_(m.walk.weight, std=0.5)
        torch.nn.init.uniform_(m.walk.bias, -1., 1.)
    return m


def grads(m, x, hw, joined, monkeypatch):
    """Output and gradients of x and every trainable parameter, with the joined backward on or off."""
    with monkeypatch.context() as mp:
        calls = []
        real = sa._joined_backward_applies
        mp.setattr(sa, '_joined_backward_applies', lambda *a: calls.append(real(*a)) or (calls[-1] and joined))
        m.zero_grad()
        x = x.detach().clone().requires_grad_(x.requires_grad)
        y = sa.dgmn2_attention_fast(m, x, hw)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    assert calls == [True], 'the joined backward should apply here'
    out = {n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad}
    if x.requires_grad:
        out['x'] = x.grad.clone()
    return y.detach(), out


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize('B,C,h,H,W,mode', [
    (2, 64, 1, 9, 13, 'official'),   # d = 64, odd non-square (official height term resized)
    (2, 64, 2, 8, 8, 'official'),    # d = 32, square (transposed)
    (3, 30, 3, 5, 11, 'corrected'),  # d = 10
])
def test_joined_backward_equals_separate_operators(ext, monkeypatch, dtype, tol, B, C, h, H, W, mode):
    m = make_attention(C, h, mode, dtype)
    x = torch.randn(B, H * W, C, dtype=dtype, requires_grad=True)
    ya, ga = grads(m, x, (H, W), False, monkeypatch)
    yb, gb = grads(m, x, (H, W), True, monkeypatch)
    assert torch.equal(ya, yb)  # same forward operators
    assert ga.keys() == gb.keys()
    for k in ga:
        assert ga[k].abs().max() > 0 or k.endswith('bias'), k
        err = (ga[k] - gb[k]).abs().max().item()
        assert err <= tol * max(1., ga[k].abs().max().item()), (k, err)


@pytest.mark.parametrize('frozen', [('rel_pos', ), ('walk', ), ('qkv', 'walk')])
def test_joined_backward_with_frozen_parts(ext, monkeypatch, frozen):
    """Only some inputs of the joined function need a gradient (frozen tables / walk predictor / qkv)."""
    m = make_attention(32, 2, 'official', torch.float64)
    for name in frozen:
        getattr(m, name).requires_grad_(False)
    x = torch.randn(2, 6 * 7, 32, dtype=torch.float64, requires_grad=('qkv' in frozen))
    ga = grads(m, x, (6, 7), False, monkeypatch)[1]
    gb = grads(m, x, (6, 7), True, monkeypatch)[1]
    assert ga.keys() == gb.keys() and ga
    for k in ga:
        assert (ga[k] - gb[k]).abs().max().item() <= 1e-10 * max(1., ga[k].abs().max().item()), k


def test_joined_function_gradcheck_fp64(ext):
    H, W, nh, d = 3, 4, 2, 3
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(1, H * W, 3 * nh * d, generator=g, dtype=torch.float64, requires_grad=True)
    walk = (torch.randn(1, H * W, nh, 18, generator=g, dtype=torch.float64) * 0.6).requires_grad_()
    rows_w = torch.randn(W, 9, d, generator=g, dtype=torch.float64, requires_grad=True)
    rows_h = torch.randn(H, 9, d, generator=g, dtype=torch.float64, requires_grad=True)
    for mode in ('official', 'corrected'):
        assert torch.autograd.gradcheck(
            lambda a, b, c, e: sa._RelPosSampledAttentionCPU.apply(a, b, c, e, H, W, nh, 0.4, mode),
            (qkv, walk, rows_w, rows_h), eps=1e-6, atol=1e-6)


def test_joined_backward_applies_only_in_cpu_training(ext, monkeypatch):
    m = make_attention(16, 2, 'official')
    x = torch.randn(1, 20, 16, requires_grad=True)
    seen = []
    real = sa._RelPosSampledAttentionCPU.apply
    monkeypatch.setattr(sa._RelPosSampledAttentionCPU, 'apply', lambda *a: seen.append(1) or real(*a))
    sa.dgmn2_attention_fast(m, x, (4, 5)).sum().backward()
    assert len(seen) == 1
    with torch.no_grad():
        sa.dgmn2_attention_fast(m, x, (4, 5))
    m.eval()
    sa.dgmn2_attention_fast(m, x.detach(), (4, 5))  # eval, input without grad, parameters with grad: still
    assert len(seen) == 2                            # a graph for the parameters
    monkeypatch.setenv(ob.ENV_VAR, 'torch')
    sa.dgmn2_attention_fast(m, x, (4, 5)).sum().backward()
    assert len(seen) == 2

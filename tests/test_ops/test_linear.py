"""The fast path's oneDNN linears (``dgmn_mm.ops.linear``) against ``F.linear``: values, gradients, and
where the plain op must run instead (other dtypes, autocast, tracing)."""
import copy

import pytest
import torch
import torch.nn.functional as F

import dgmn_mm.ops.linear as L
from dgmn_mm.models.backbones.dgmn2 import DGMN2Block

pytestmark = pytest.mark.skipif(not L._onednn_available(), reason='PyTorch built without oneDNN')


@pytest.fixture
def calls(monkeypatch):
    """Counts the oneDNN calls (the module-level function every path goes through)."""
    n = [0]
    real = L.onednn_linear

    def counting(*args, **kwargs):
        n[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(L, 'onednn_linear', counting)
    return n


@pytest.mark.parametrize('shape,bias,transposed', [((37, 24), True, False), ((2, 19, 24), True, False),
                                                    ((3, 5, 24), False, False), ((2, 11, 24), True, True)])
def test_values_and_gradients_match_f_linear(calls, shape, bias, transposed):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    if transposed:  # a non-contiguous input
        x = torch.randn(shape[1], shape[0], shape[2]).transpose(0, 1)
    w = torch.randn(40, 24, requires_grad=True)
    b = torch.randn(40, requires_grad=True) if bias else None
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    y1, y2 = L.linear(x1, w, b), F.linear(x2, w, b)
    assert calls[0] == 1 and y1.shape == y2.shape
    torch.testing.assert_close(y1, y2, rtol=1e-6, atol=1e-5)
    g = torch.randn_like(y1)
    gw1, *rest1 = torch.autograd.grad(y1, [w, x1] + ([b] if bias else []), g)
    gw2, *rest2 = torch.autograd.grad(y2, [w, x2] + ([b] if bias else []), g)
    assert calls[0] == 2  # the input gradient went through oneDNN too
    torch.testing.assert_close(gw1, gw2, rtol=1e-6, atol=1e-4)
    for a, c in zip(rest1, rest2):
        torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-5)


def test_frozen_weight_and_no_grad(calls):
    torch.manual_seed(0)
    x = torch.randn(6, 8, requires_grad=True)
    w, b = torch.randn(5, 8), torch.randn(5)  # frozen: no weight gradient is asked for
    y = L.linear(x, w, b)
    (gx, ) = torch.autograd.grad(y.sum(), [x])
    torch.testing.assert_close(gx, w.sum(0).expand(6, 8), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        assert L.linear(x, w, b).grad_fn is None
    assert calls[0] == 3


@pytest.mark.parametrize('case', ['fp64', 'autocast', 'trace', 'empty', 'flop_counter'])
def test_plain_linear_where_onednn_does_not_apply(calls, case):
    torch.manual_seed(0)
    x, w, b = torch.randn(4, 6), torch.randn(3, 6), torch.randn(3)
    if case == 'fp64':
        y = L.linear(x.double(), w.double(), b.double())
        torch.testing.assert_close(y, F.linear(x.double(), w.double(), b.double()))
    elif case == 'autocast':
        with torch.autocast('cpu', torch.bfloat16):
            assert L.linear(x, w, b).dtype == torch.bfloat16  # autocast's F.linear
    elif case == 'trace':  # a traced graph records the standard op (ONNX, FLOP counters)
        graph = torch.jit.trace(lambda t: L.linear(t, w, b), (x, ), check_trace=False).graph
        assert 'aten::linear' in str(graph) and 'mkldnn' not in str(graph)
    elif case == 'empty':
        assert L.linear(x[:0], w, b).shape == (0, 3)
    else:  # a dispatch mode sees aten ops it can count, not the oneDNN one
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            L.linear(x, w, b)
        assert counter.get_total_flops() == 2 * 4 * 6 * 3
    assert calls[0] == 0


def _block_pair(seed=0):
    torch.manual_seed(seed)
    fast = DGMN2Block(32, 2, 4, (8, 8), attn_impl='fast').train()
    for p in fast.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    plain = copy.deepcopy(fast)
    plain.ffn.onednn = False
    return fast, plain


@pytest.mark.parametrize('chunked', [True, False])
def test_fast_block_ffn_matches_nn_linear(calls, chunked):
    """The fast block's FFN (oneDNN, chunked or plain form) against the same block with ``nn.Linear``."""
    fast, plain = _block_pair()
    for blk in (fast, plain):
        blk.chunked_ffn_min_bytes = 0 if chunked else 2 ** 62
        blk.train_chunk_tokens = 50
    x = torch.randn(2, 9 * 13, 32)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = fast(x1, (9, 13)), plain(x2, (9, 13))
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-5)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    assert calls[0] > 0
    torch.testing.assert_close(x1.grad, x2.grad, rtol=0, atol=1e-5)
    for (n, p1), p2 in zip(fast.named_parameters(), plain.parameters()):
        scale = max(1., p2.grad.abs().max().item())
        assert (p1.grad - p2.grad).abs().max().item() <= 1e-5 * scale, n


def test_fast_block_inference_matches_nn_linear(calls):
    fast, plain = _block_pair(1)
    fast.eval(), plain.eval()
    x = torch.randn(1, 7 * 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(fast(x, (7, 5)), plain(x, (7, 5)), rtol=0, atol=1e-5)
    assert calls[0] > 0


def test_fast_block_flops_counted(calls):
    """FLOP counters see the fast block's Linears (same count as the block with nn.Linear)."""
    from torch.utils.flop_counter import FlopCounterMode
    fast, plain = _block_pair(2)
    x = torch.randn(1, 6 * 6, 32)
    counts = []
    for blk in (fast, plain):
        for training in (True, False):
            blk.train(training)
            with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(training):
                blk(x, (6, 6))
            counts.append(counter.get_total_flops())
    assert counts[:2] == counts[2:] and counts[0] > 2 * 36 * 32 * 32 * 4  # qkv, proj, fc1, fc2 at least
    assert calls[0] == 0


def test_reference_block_keeps_nn_linear(calls):
    blk = DGMN2Block(16, 1, 4, (4, 4), attn_impl='reference').train()
    blk(torch.randn(1, 16, 16, requires_grad=True), (4, 4)).sum().backward()
    assert not blk.ffn.onednn and calls[0] == 0

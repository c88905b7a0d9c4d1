"""dgmn_mm.analysis.dit: hard-gate FLOP statistics, the skipping benchmark, and jit-counting DiT models."""
import os

import pytest
import torch

from dgmn_mm.analysis import average_gate_flops, benchmark_skipping, format_skipping_table, get_flops, time_pair
from dgmn_mm.models.backbones.dit import DiT, RoutingGate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(depths=(1, 2, 1, 1), embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 2, 4), sr_ratios=(4, 2, 2, 1),
            mlp_ratios=(2, 2, 2, 2))


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """Tiny tensors: one intra-op thread is as fast, and much faster on a shared, loaded machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _set_half_open(model, seed=0):
    """Momentum (inference) weights that route about half of the tokens and images."""
    g = torch.Generator().manual_seed(seed)
    for gate in model.gates():
        gate.weight_ema.copy_(torch.randn(gate.weight_ema.shape, generator=g) * 0.5)
        gate.bias_ema.zero_()


def test_average_gate_flops_over_hard_gates():
    model = DiT(arch=TINY).eval()
    _set_half_open(model)
    stats = average_gate_flops(model, (torch.randn(1, 3, 48, 48) for _ in range(3)))
    assert stats['num_images'] == 3 and stats['min'] <= stats['mean'] <= stats['max'] < stats['dense']
    assert stats['std'] > 0  # data dependent
    with pytest.raises(RuntimeError, match='no images'):
        average_gate_flops(model, iter(()))


def test_benchmark_skipping_rows():
    rows = benchmark_skipping(arch=TINY, size=64, fractions=(0.0, 0.9), runs=1, warmup=0)
    assert rows[0]['skipped'] == 0.0 and 0.8 < rows[1]['skipped'] < 0.97
    assert rows[1]['gflops'] < rows[0]['gflops'] == pytest.approx(rows[0]['dense_gflops'])
    assert all(r['max_abs_diff'] < 1e-4 for r in rows)
    assert '| 0.90 |' in format_skipping_table(rows)
    assert not format_skipping_table(rows, header=False).startswith('| skip prob')
    with pytest.raises(ValueError, match='fractions'):
        benchmark_skipping(arch=TINY, size=64, fractions=(1.5, ), runs=1, warmup=0)


def test_time_pair_alternates_and_counts():
    calls = []
    (med_a, min_a), (med_b, min_b) = time_pair(lambda: calls.append('a'), lambda: calls.append('b'), runs=3,
                                               warmup=1)
    assert calls == ['a', 'b'] * 4
    assert 0 <= min_a <= med_a and 0 <= min_b <= med_b


@pytest.mark.parametrize('mode', ['static', 'attention'])
def test_top_k_gates_trace_like_eager(mode):
    """The fixed-share gates ('static', 'attention') keep round(fixed_keep * N) tokens per image, also under
    jit tracing (FlopAnalyzer), where token counts are traced sizes."""
    torch.manual_seed(0)
    gate = RoutingGate(16, mode=mode, fixed_keep=0.3).eval()
    x = torch.randn(2, 25, 16)  # 25 tokens: round(0.3 * 25) = 8 routed per image
    with torch.no_grad():
        eager = gate(x)[0]
        traced = torch.jit.trace(lambda t: gate(t)[0], (x, ), check_trace=False)(x)
    assert eager.sum(-1).tolist() == [8.0, 8.0]
    torch.testing.assert_close(traced, eager, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['attention', 'static'])
def test_flop_counter_counts_the_fixed_share_dit_configs(variant):
    """get_flops counts the DiT-B2 classifiers with fixed-share gates (their top-k used to break the tracer);
    at 224 x 224 they keep 22 % of the tokens of every gated node, so they cost well below the
    all-gates-open DiT-B2 (about 10 G with this counter) and near the paper's 3.8 GFLOPs."""
    cfg = os.path.join(REPO, f'configs/mmpretrain/dit/dit-b2-{variant}_8xb128_in1k.py')
    res = get_flops(cfg)
    assert res['kind'] == 'classifier' and res['input_shape'] == (1, 3, 224, 224)
    assert res['params'] == 55655816
    assert 3.0e9 < res['impl'] < 4.0e9, res['impl']

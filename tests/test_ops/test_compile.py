"""torch.compile(fullgraph=True) of DGMN2 captures the whole backbone (the attention operators have fake
kernels and a registered autograd) and matches eager, in eval and in a training step.

The tests use ``backend='aot_eager'`` (AOTAutograd graphs, eager kernels: fast to compile); the inductor
variant (code generation, much slower to compile on a 2-core machine) is marked slow.
"""
import os

import pytest
import torch

import dgmn_mm  # noqa: F401
from dgmn_mm.models.backbones.dgmn2 import DGMN2


def _tiny(**kw):
    torch.manual_seed(0)
    return DGMN2(arch='tiny', **kw)


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# inductor generates and compiles C++ for the whole backbone: about 10 minutes on 2 cores, so it runs only
# when asked for (DGMN_MM_TEST_INDUCTOR=1); it passed here with a max difference of 1.25e-6
INDUCTOR = pytest.param('inductor', marks=[pytest.mark.slow, pytest.mark.skipif(
    os.environ.get('DGMN_MM_TEST_INDUCTOR') != '1', reason='set DGMN_MM_TEST_INDUCTOR=1 (about 10 min on 2 cores)')])


@pytest.mark.slow  # torch.compile of the whole backbone (aot_eager)
@pytest.mark.parametrize('backend', ['aot_eager', INDUCTOR])
def test_compile_fullgraph_eval_matches_eager(backend):
    torch._dynamo.reset()
    model = _tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    with torch.no_grad():
        ref = model(x)
        out = compiled(x)
    assert [o.shape for o in out] == [r.shape for r in ref]
    assert _max_diff(ref, out) <= 1e-5


@pytest.mark.slow
def test_compile_fullgraph_train_step_matches_eager():
    """Forward + backward through the compiled graph (the operators' backward is an operator too)."""
    torch._dynamo.reset()
    model = _tiny(drop_path_rate=0.).train()
    x = torch.randn(2, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    out = compiled(x)
    sum(o.square().mean() for o in out).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    ref = model(x)
    sum(o.square().mean() for o in ref).backward()
    assert _max_diff(ref, out) <= 1e-5
    for n, p in model.named_parameters():
        assert (grads[n] - p.grad).abs().max() <= 1e-5 * max(1., p.grad.abs().max().item()), n
    assert any('rel_pos' in n and grads[n].abs().max() > 0 for n in grads)
    assert any('attn.walk' in n and grads[n].abs().max() > 0 for n in grads)


def test_torch_export_captures_the_operators():
    """torch.export (static shapes) keeps the attention as dgmn_mm operators; the program runs and matches."""
    torch.manual_seed(0)
    model = DGMN2(arch=dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8),
                            mlp_ratios=(2, 2, 2, 2))).eval()
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        ep = torch.export.export(model, (x, ))
        out = ep.module()(x)
        ref = model(x)
    targets = {str(n.target) for gm in ep.graph_module.modules() if isinstance(gm, torch.fx.GraphModule)
               for n in gm.graph.nodes if n.op == 'call_function'}  # (autocast regions are submodules)
    assert 'dgmn_mm.sampled_attention.default' in targets and 'dgmn_mm.relpos_rows.default' in targets
    assert _max_diff(ref, out) <= 1e-5

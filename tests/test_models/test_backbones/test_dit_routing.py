"""DiT's routing space against every number the paper publishes for it, and the ablations at their budgets.

- Table 1 (parameters, within 1%) and Table 6 (DiT-B2 with every gate open, "Fully": 15.6 GFLOPs, within 5%),
  analytically for every size and measured with torch's ``FlopCounterMode`` (multiply-adds) for B2;
- the budget ratio mu of every config = the paper's FLOPs / our all-open FLOPs;
- the ablation configs of Tables 6-8 at inference: Static, Random and Attention cost the paper's 3.8 GFLOPs
  (measured), Scale-only's 8.4 and Depth-only's 3.7 GFLOPs lie inside what their free gates can reach;
- per-node row gates: only the routed tokens enter a node's blocks (skipped tokens are no keys either);
- constructor and input validation, and the structured output (nothing stored on the module).
"""
import os

import pytest
import torch
from mmengine.config import Config
from torch.utils.flop_counter import FlopCounterMode

from dgmn_mm.models.backbones.dit import DiT, DiTOutputs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PAPER_PARAMS = {'b1': 30.3, 'b2': 55.9, 'b3': 86.3, 'b4': 126.0, 'b5': 158.0}  # M, Table 1 (1000-class head)
PAPER_GFLOPS = {'b1': 2.0, 'b2': 3.8, 'b3': 6.8, 'b4': 9.9, 'b5': 10.3}  # Table 1, averages with learned gates
FULLY_GFLOPS = {'b2': 15.6}  # Table 6: every gate open (the only size the paper gives)
HEAD = 512 * 1000 + 1000
TINY = dict(depths=(1, 2, 1, 1), embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 2, 4), sr_ratios=(4, 2, 2, 1),
            mlp_ratios=(2, 2, 2, 2))


pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


def _meta(**kwargs):
    with torch.device('meta'):
        return DiT(**kwargs)


def _measured_gflops(model, size=224, seed=0):
    """Multiply-adds of one eval forward (batch 1, so no padding), counted by torch's FlopCounterMode, and the
    FLOPs the backbone reports for it (Eq. 5 with hard gates)."""
    torch.manual_seed(seed)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model.eval()(x)
    return counter.get_total_flops() / 2e9, float(out.complexity['flops'][0]) / 1e9, out


def _config(name):
    return Config.fromfile(os.path.join(REPO, 'configs', 'mmpretrain', 'dit', name))


def _backbone_from_config(name):
    cfg = _config(name)
    bcfg = dict(cfg.model.backbone)
    bcfg.pop('type')
    bcfg.pop('init_cfg', None)
    return DiT(**bcfg), cfg


# ----------------------------------------------------------------------------------------------------------
# Tables 1 and 6
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', sorted(PAPER_PARAMS))
def test_params_and_all_open_flops(arch):
    model = _meta(arch=arch)
    n = sum(p.numel() for p in model.parameters()) + HEAD
    assert abs(n / 1e6 / PAPER_PARAMS[arch] - 1) < 0.01, n
    dense = model.dense_flops((224, 224)) / 1e9
    if arch in FULLY_GFLOPS:
        assert abs(dense / FULLY_GFLOPS[arch] - 1) < 0.05, dense
    # the routing space holds the paper's average: mu = paper / all open is a proper fraction, and every
    # size lands near B2's ratio 3.8 / 15.6 (B5 is held back by its parameter count)
    mu = PAPER_GFLOPS[arch] / dense
    assert 0.2 < mu < 0.3, mu


def test_full_grid_cannot_meet_table1():
    """Fig. 2's full 4 x 4 grid: 16 nodes and 12 patch embeddings. Even with one block per node DiT-B1 would
    hold more than Table 1's 30.3 M, which is why we keep the nodes of Fig. 3 (the band |i - j| <= 1)."""
    one = dict(DiT.default_widths, depths=(1, 1, 1, 1), mlp_ratios=(8, 8, 4, 4))
    full = _meta(arch=one, band=None)
    assert len(full.nodes) == 16 and len(full.embeds) == 12
    n = sum(p.numel() for p in full.parameters()) + HEAD
    assert n / 1e6 > PAPER_PARAMS['b1'] * 1.03
    band = _meta(arch='b1')
    assert sorted(band.node_ids) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (3, 2), (3, 3)]


def test_fully_b2_measured():
    """Table 6 "Fully": the configured ablation, measured with FlopCounterMode, is 15.6 GFLOPs (5%)."""
    model, _ = _backbone_from_config('dit-b2-fully_8xb128_in1k.py')
    measured, reported, _ = _measured_gflops(model)
    assert abs(measured / 15.6 - 1) < 0.05, measured
    assert abs(reported / measured - 1) < 0.01, (reported, measured)


@pytest.mark.parametrize('arch', sorted(PAPER_GFLOPS))
def test_config_mu_is_paper_over_all_open(arch):
    cfg = _config(f'dit-{arch}_8xb128_in1k.py')
    dense = _meta(arch=arch).dense_flops((224, 224)) / 1e9
    assert cfg.model.budget_loss.mu == pytest.approx(PAPER_GFLOPS[arch] / dense, abs=0.002)


# ----------------------------------------------------------------------------------------------------------
# Tables 6-8: the ablations at their budgets
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('variant', ['static', 'random', 'attention'])
def test_fixed_mask_ablations_cost_3_8_gflops(variant):
    """Table 6 "Static", Table 7 "Random" and "Attention": 3.8 GFLOPs at inference with hard gates."""
    model, _ = _backbone_from_config(f'dit-b2-{variant}_8xb128_in1k.py')
    assert model.nodes['1_1'].gate.mode == variant
    assert all(e.gate.mode == 'open' for e in model.embeds.values())
    assert model.nodes['0_0'].gate.fixed_keep == pytest.approx(model.fixed_keep_for(3.8), abs=1e-3)
    measured, reported, out = _measured_gflops(model)
    assert abs(measured / 3.8 - 1) < 0.05, measured
    assert abs(reported / 3.8 - 1) < 0.05, reported
    # every scale receives its map (column paths connected): the stride-32 output is not empty
    assert all(float(a.min()) == 1 for a in out.routing['alive'].values())
    assert float(out[-1].abs().amax()) > 0


def test_random_ablation_every_image_reaches_the_classifier():
    model = DiT(arch=TINY, row_gate='random', col_gate='open', fixed_keep=0.2).eval()
    with torch.no_grad():
        out = model(torch.randn(16, 3, 64, 64))
    assert all(float(a.min()) == 1 for a in out.routing['alive'].values())
    assert bool((out[-1].flatten(1).abs().amax(1) > 0).all())
    kept = torch.cat([g.flatten() for g in out.routing['row'].values()]).mean()
    assert 0.15 < float(kept) < 0.25


def _close(gates):
    for g in gates:
        g.weight_ema.zero_()
        g.bias_ema.copy_(torch.tensor([5.0, -5.0]))


@pytest.mark.parametrize('name,target,free', [('scale-only', 8.4, 'embeds'), ('depth-only', 3.7, 'nodes')])
def test_scale_only_and_depth_only_budgets_are_reachable(name, target, free):
    """Table 8: Scale-only (row gates open, 8.4 GFLOPs) and Depth-only (column gates open, 3.7 GFLOPs) learn
    their free gates under the budget loss; their configs ask for the table's FLOPs and the free gates can reach
    them (all closed <= target <= all open), measured at inference."""
    b2_open = _meta(arch='b2').dense_flops((224, 224)) / 1e9
    model, cfg = _backbone_from_config(f'dit-b2-{name}_8xb128_in1k.py')
    assert cfg.model.budget_loss.mu == pytest.approx(target / b2_open, abs=0.002)
    assert cfg.model.budget_loss.loss_weight > 0
    hi, _, _ = _measured_gflops(model)
    with torch.no_grad():
        _close([m.gate for m in getattr(model, free).values()])
    lo, reported, _ = _measured_gflops(model)
    assert lo < target < hi, (name, lo, hi)
    assert abs(reported / lo - 1) < 0.05


def test_dynamic_b2_budget():
    """Tables 6-8 "Dynamic (ours)" / "Learnable": the budget loss asks for 3.8 of the 15.6 GFLOPs."""
    cfg = _config('dit-b2_8xb128_in1k.py')
    assert cfg.model.budget_loss.mu * 15.6 == pytest.approx(3.8, rel=0.01)


# ----------------------------------------------------------------------------------------------------------
# per-node row gates
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('key,sparse', [('0_0', False), ('0_0', True), ('3_3', False), ('3_3', True)])
def test_only_routed_tokens_enter_the_node(key, sparse):
    """Changing a skipped token changes nothing at the routed positions of the node's output (it is neither a
    query nor a key/value, nor in a spatial-reduction window or a depth-wise conv), and the skipped positions
    come out unchanged (identity path)."""
    torch.manual_seed(0)
    model = DiT(arch=TINY).eval()
    node = model.nodes[key]
    i = int(key[0])
    H, W = model.row_shapes((64, 64))[i]
    C = model.embed_dims[i]
    f = torch.randn(2, H * W, C)
    g = (torch.rand(2, H * W) < 0.5).float()
    g[:, 0] = 0.
    f2 = f.clone()
    f2[:, 0] += 10 * torch.randn(C)  # a skipped token
    run = node.forward_sparse if sparse else node.forward_dense
    with torch.no_grad():
        a, b = run(f, (H, W), g), run(f2, (H, W), g)
    keep = g > 0
    torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a[~keep], f[~keep])
    assert float((a[keep] - f[keep]).abs().max()) > 1e-3  # the routed ones were computed


def test_node_flops_charged_per_node():
    """Eq. 5 with one gate per node: mean(G) x C^row of the whole cell."""
    model = DiT(arch=TINY, row_gate='random', col_gate='open', fixed_keep=0.5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    shapes = model.row_shapes((64, 64))
    expected = model.stem_flops((64, 64))
    for (i, j) in model.node_ids:
        expected += float(out.routing['row'][(i, j)].mean()) * model.nodes[f'{i}_{j}'].row_flops(shapes[i])
    for (i, j) in model.edge_ids:
        expected += model.embeds[f'{i}_{j}'].flops(shapes[i])
    assert float(out.complexity['flops'][0]) == pytest.approx(expected, rel=1e-6)


# ----------------------------------------------------------------------------------------------------------
# validation and the structured output
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='b9'), 'arch'), (dict(arch=3), 'arch'), (dict(in_channels=0), 'in_channels'),
    (dict(band=-1), 'band'), (dict(num_columns=0), 'num_columns'), (dict(band=0), 'band'),
    (dict(out_indices=(4, )), 'out_indices'), (dict(out_indices=('a', )), 'out_indices'),
    (dict(drop_rate=1.0), 'drop_rate'),
    (dict(attn_drop_rate=-0.1), 'attn_drop_rate'), (dict(drop_path_rate='x'), 'drop_path_rate'),
    (dict(row_gate='soft'), 'row_gate'), (dict(col_gate='attention'), 'col_gate'),
    (dict(row_gate_granularity='token'), 'row_gate_granularity'),
    (dict(row_gate='static', row_gate_granularity='block'), 'row_gate_granularity'),
    (dict(gate_momentum=1.5), 'momentum'), (dict(gate_tau=0.), 'tau'), (dict(row_init_keep=1.0), 'init_keep'),
    (dict(col_init_keep=0.0), 'init_keep'), (dict(fixed_keep=-0.1), 'fixed_keep'),
    (dict(sparse_dwconv='conv'), 'sparse_dwconv'), (dict(skip_dead_nodes=1), 'skip_dead_nodes'),
    (dict(arch=dict(TINY, depths=(1, -1, 1, 1))), 'depths'), (dict(arch=dict(TINY, depths=(1, 1))), 'arch'),
])
def test_constructor_validation(kwargs, match):
    base = dict(arch=TINY)
    base.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        DiT(**base)


@pytest.mark.parametrize('training', [True, False])
def test_small_inputs_get_a_clear_error(training):
    model = DiT(arch=dict(DiT.default_widths, depths=(1, 1, 1, 1), mlp_ratios=(1, 1, 1, 1))).train(training)
    assert model.min_input_size == 29
    with pytest.raises(ValueError, match='at least 29 x 29'):
        model(torch.randn(1, 3, 28, 64))
    out = model(torch.randn(1, 3, 29, 29))
    assert [tuple(o.shape[2:]) for o in out] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    with pytest.raises(ValueError, match='in_channels'):
        model(torch.randn(1, 1, 32, 32))


def test_structured_output_and_no_state_on_the_module():
    model = DiT(arch=TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 48, 48))
    assert isinstance(out, DiTOutputs) and isinstance(out, tuple) and len(out) == 4
    assert out.complexity['flops'].shape == (2, ) and out.complexity['dense_flops'] == model.dense_flops((48, 48))
    assert set(out.routing['row']) == set(model.node_ids)
    assert all(g.shape == (2, 1, h * w) for (i, _), g in out.routing['row'].items()
               for h, w in [out.routing['shapes'][i]])
    assert not hasattr(model, 'complexity') and not hasattr(model, 'routing')


def test_space_picture(tmp_path):
    import importlib.util
    path = os.path.join(REPO, 'tools', 'analysis_tools', 'visualize_dit_routing.py')
    spec = importlib.util.spec_from_file_location('_dit_vis_space', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tool.draw_space(_meta(arch='b2'), str(tmp_path / 'space.png'))
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_sparse_inference_under_autocast():
    """Mixed precision (the AMP configs; bfloat16 autocast on CPU here): the routed-token path keeps the dtypes of
    its scatters consistent and stays close to the fp32 result."""
    torch.manual_seed(0)
    model = DiT(arch=TINY, row_gate='random', col_gate='open', fixed_keep=0.5).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.manual_seed(1)
    with torch.no_grad():
        ref = model(x)
    torch.manual_seed(1)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        out = model(x)
    assert out[0].dtype == torch.bfloat16
    for a, b in zip(out, ref):
        assert float((a.float() - b).abs().max()) < 0.3

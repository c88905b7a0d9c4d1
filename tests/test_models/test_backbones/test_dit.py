"""DiT backbone: parameters, FLOPs counting, gates, straight-through gradients, sparse == dense,
the budget loss, the loss-adding models, every config, and the routing picture (the hard-gate FLOP statistics
and the skipping benchmark are tested through dgmn_mm.analysis in tests/test_analysis/test_analysis_dit.py).

Behaviour tests use a tiny arch and small inputs; the paper-sized models are built on the ``meta`` device
(no memory, no init cost) for parameter counts and config builds.
"""
import glob
import importlib.util
import os
import warnings

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope

from dgmn_mm.models.backbones.dit import DiT, DiTBlock, DWConvFFN, RoutingGate
from dgmn_mm.models.dit_models import DiTBudgetLoss
from dgmn_mm.registry import MODELS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TINY = dict(depths=(1, 2, 1, 1), embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 2, 4), sr_ratios=(4, 2, 2, 1),
            mlp_ratios=(2, 2, 2, 2))
PAPER_PARAMS = {'b1': 30.3, 'b2': 55.9, 'b3': 86.3, 'b4': 126.0, 'b5': 158.0}  # M, with a 1000-class head
PVTV2_GFLOPS = {'b1': 2.12, 'b2': 4.05, 'b3': 6.93, 'b4': 10.14, 'b5': 11.76}  # fvcore, 224


pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


def _load_tool(name):
    path = os.path.join(REPO, 'tools', 'analysis_tools', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'_dit_tool_{name}', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _set_half_open(model, seed=0):
    """Momentum (inference) weights that route about half of the tokens and images."""
    g = torch.Generator().manual_seed(seed)
    for gate in model.gates():
        gate.weight_ema.copy_(torch.randn(gate.weight_ema.shape, generator=g) * 0.5)
        gate.bias_ema.zero_()


# ----------------------------------------------------------------------------------------------------------
# structure, parameters, FLOPs
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', sorted(PAPER_PARAMS))
def test_params_match_paper(arch):
    with torch.device('meta'):
        model = DiT(arch=arch)
    n = sum(p.numel() for p in model.parameters()) + 512 * 1000 + 1000  # + the LinearClsHead
    assert abs(n / 1e6 / PAPER_PARAMS[arch] - 1) < 0.01, (arch, n)
    # 10 nodes on the band |i - j| <= 1, 6 gated patch embeddings, 4 outputs, one row gate per node
    assert len(model.nodes) == 10 and len(model.embeds) == 6
    assert all(n.gate is not None and all(b.gate is None for b in n.blocks) for n in model.nodes.values())
    assert set(model.embeds) == {'0_0', '0_1', '1_1', '1_2', '2_2', '2_3'}


@pytest.mark.parametrize('arch', sorted(PVTV2_GFLOPS))
def test_flops_counter_reproduces_pvtv2(arch):
    """Our analytic counter applied to PVTv2 gives the paper's (fvcore) PVTv2 FLOPs within 1.5%."""
    with torch.device('meta'):
        model = DiT(arch=arch)
    assert abs(model.pvtv2_flops((224, 224)) / 1e9 / PVTV2_GFLOPS[arch] - 1) < 0.015
    assert model.dense_flops((224, 224)) > model.pvtv2_flops((224, 224))


def test_flops_counter_matches_jit_counter():
    """All gates open, dense path: the analytic count equals mmengine's fvcore-style counter up to the
    LayerNorms it adds (and the gate norms, which we do not count)."""
    from mmengine.analysis import FlopAnalyzer
    model = DiT(arch=TINY, row_gate='open', col_gate='open', sparse_inference=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        analyzer = FlopAnalyzer(model, (x, ))
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        ops = analyzer.by_operator()
        out = model(x)
    ours = float(out.complexity['flops'][0])
    assert ours == model.dense_flops((64, 64))
    counted = sum(v for k, v in ops.items() if k not in ('layer_norm', 'group_norm'))
    assert abs(ours / counted - 1) < 0.01, (ours, dict(ops))


def test_block_equals_mmdet_pvtv2_layer():
    """With its gate open, our block is mmdet's PVTv2 encoder layer (same weights -> same output)."""
    from mmdet.models.backbones.pvt import PVTEncoderLayer
    C, heads, sr, hidden, H, W = 32, 2, 2, 64, 6, 8
    ref = PVTEncoderLayer(C, heads, hidden, sr_ratio=sr, use_conv_ffn=True,
                          norm_cfg=dict(type='LN', eps=1e-6)).eval()
    ours = DiTBlock(C, heads, sr, hidden / C).eval()
    ours.attn.norm.eps = ref.attn.norm.eps
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.2)
        sd = {
            'norm1.weight': ref.norm1.weight, 'norm1.bias': ref.norm1.bias,
            'norm2.weight': ref.norm2.weight, 'norm2.bias': ref.norm2.bias,
            'attn.q.weight': ref.attn.attn.in_proj_weight[:C], 'attn.q.bias': ref.attn.attn.in_proj_bias[:C],
            'attn.kv.weight': ref.attn.attn.in_proj_weight[C:], 'attn.kv.bias': ref.attn.attn.in_proj_bias[C:],
            'attn.proj.weight': ref.attn.attn.out_proj.weight, 'attn.proj.bias': ref.attn.attn.out_proj.bias,
            'attn.sr.weight': ref.attn.sr.weight, 'attn.sr.bias': ref.attn.sr.bias,
            'attn.norm.weight': ref.attn.norm.weight, 'attn.norm.bias': ref.attn.norm.bias,
            'ffn.fc1.weight': ref.ffn.layers[0].weight[:, :, 0, 0], 'ffn.fc1.bias': ref.ffn.layers[0].bias,
            'ffn.dwconv.weight': ref.ffn.layers[1].weight, 'ffn.dwconv.bias': ref.ffn.layers[1].bias,
            'ffn.fc2.weight': ref.ffn.layers[4].weight[:, :, 0, 0], 'ffn.fc2.bias': ref.ffn.layers[4].bias,
        }
        missing, unexpected = ours.load_state_dict(sd, strict=False)
        assert not unexpected and all(k.startswith('gate.') for k in missing)
        x = torch.randn(2, H * W, C)
        expected = ref(x, (H, W))
        torch.testing.assert_close(ours.forward_dense(x, (H, W), torch.ones(2, H * W)), expected,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.forward_sparse(x, (H, W), torch.ones(2, H * W)), expected,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.forward_masked(x, (H, W), torch.ones(2, H * W)), expected,
                                   atol=1e-5, rtol=1e-5)


def test_output_shapes_and_out_indices():
    model = DiT(arch=TINY).eval()
    outs = model(torch.randn(2, 3, 70, 45))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 18, 12), (2, 32, 9, 6), (2, 48, 5, 3), (2, 64, 3, 2)]
    assert isinstance(outs, tuple)
    model = DiT(arch=TINY, out_indices=(3, )).eval()
    assert [tuple(o.shape) for o in model(torch.randn(1, 3, 64, 64))] == [(1, 64, 2, 2)]
    with pytest.raises(ValueError):
        DiT(arch='b9')
    with pytest.raises(ValueError, match='col_gate'):
        DiT(arch=TINY, col_gate='attention')


# ----------------------------------------------------------------------------------------------------------
# gates
# ----------------------------------------------------------------------------------------------------------
def test_gates_train_vs_eval():
    model = DiT(arch=TINY, gate_momentum=0.9)
    x = torch.randn(2, 3, 64, 64)
    # training: hard binary Gumbel samples, stochastic, ~95% routed at init
    model.train()
    r1 = torch.cat([g.flatten() for g in model(x).routing['row'].values()])
    r2 = torch.cat([g.flatten() for g in model(x).routing['row'].values()])
    assert set(r1.unique().tolist()) <= {0.0, 1.0}
    assert 0.88 < float(r1.mean()) < 0.995
    assert not torch.equal(r1, r2)
    # eval: deterministic argmax with the momentum weights (not the trained ones)
    model.eval()
    outs_a = model(x)
    e1 = torch.cat([g.flatten() for g in outs_a.routing['row'].values()])
    outs_b = model(x)
    e2 = torch.cat([g.flatten() for g in outs_b.routing['row'].values()])
    assert torch.equal(e1, e2) and all(torch.equal(a, b) for a, b in zip(outs_a, outs_b))
    assert float(e1.mean()) == 1.0  # bias +2.9 in favour of routing: every token routed
    gate = model.nodes['0_0'].gate
    gate.bias_ema.copy_(torch.tensor([5.0, -5.0]))  # only the momentum copy says "skip"
    assert float(model(x).routing['row'][(0, 0)].sum()) == 0.0
    model.train()
    assert float(model(x).routing['row'][(0, 0)].mean()) > 0.8  # training uses w, not the momentum copy


def test_momentum_update_eq3():
    model = DiT(arch=TINY, gate_momentum=0.9).train()
    gate = model.embeds['1_1'].gate
    with torch.no_grad():
        gate.fc.weight.add_(1.0)
    ema_before, w = gate.weight_ema.clone(), gate.fc.weight.detach().clone()
    model(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(gate.weight_ema, 0.9 * ema_before + 0.1 * w)
    model.eval()
    before = gate.weight_ema.clone()
    model(torch.randn(1, 3, 32, 32))
    assert torch.equal(gate.weight_ema, before)  # no update at inference


def test_gate_modes():
    x = torch.randn(4, 10, 8)
    for mode in ('open', 'random'):
        gate = RoutingGate(8, mode=mode, fixed_keep=0.3).train()
        g, p = gate(x)
        if mode == 'open':
            assert torch.equal(g, torch.ones(4, 10))
        else:
            assert set(g.unique().tolist()) <= {0.0, 1.0} and torch.allclose(p, torch.full_like(p, 0.3))
        assert gate.flops(10) == 0
        assert not any(p.requires_grad for p in gate.parameters())  # unused: DDP must not wait for them
    # static and attention route exactly round(fixed_keep * N) tokens of every image, data-dependently
    for mode in ('static', 'attention'):
        gate = RoutingGate(8, mode=mode, fixed_keep=0.3)
        assert not any(p.requires_grad for p in gate.parameters())
        g, p = gate(x)
        assert torch.equal(g.sum(1), torch.full((4, ), 3.)) and torch.equal(g, p)
        assert not torch.equal(g[0], g[1]) and gate.flops(10) == 160
        assert torch.equal(gate(x)[0], g)  # deterministic
    with pytest.raises(ValueError, match='token map'):
        RoutingGate(8, mode='attention')(torch.randn(4, 8))
    with pytest.raises(ValueError, match='fixed_keep'):
        RoutingGate(8, mode='random', fixed_keep=1.5)
    model = DiT(arch=TINY, row_gate='open', col_gate='learned')  # scale-only (Table 8)
    assert all(n.gate.mode == 'open' for n in model.nodes.values())
    model = DiT(arch=TINY, row_gate_granularity='block')  # one gate per block (option)
    assert all(n.gate is None and all(b.gate.mode == 'learned' for b in n.blocks) for n in model.nodes.values())
    assert all(e.gate.mode == 'learned' for e in model.embeds.values())


def test_straight_through_gradients_reach_gate_weights():
    model = DiT(arch=TINY, row_init_keep=0.6, col_init_keep=0.9).train()
    outs = model(torch.randn(2, 3, 64, 64))
    proj = [torch.randn(o.shape[1]) for o in outs]  # a loss that is not constant under the output norms
    loss = sum((o * p.view(1, -1, 1, 1)).pow(2).mean() for o, p in zip(outs, proj))
    loss.backward()
    for name, gate in [(f'row {k}', n.gate) for k, n in model.nodes.items()] + \
            [(f'col {k}', e.gate) for k, e in model.embeds.items()]:
        if name == 'col 2_3':  # (3, 3)'s column input: reached only if that image's gate opened
            continue
        assert gate.fc.weight.grad is not None, name
        assert float(gate.fc.weight.grad.abs().sum()) > 0, name
    # the momentum copy is a buffer: no gradient
    assert not model.nodes['0_0'].gate.weight_ema.requires_grad


# ----------------------------------------------------------------------------------------------------------
# real skipping
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('mode', ['map', 'gather'])
def test_sparse_ffn_equals_masked_dense(mode):
    ffn = DWConvFFN(8, 16, sparse_dwconv=mode).eval()
    B, H, W = 3, 5, 7
    x = torch.randn(B, H * W, 8)
    mask = (torch.rand(B, H * W) < 0.4).float()
    dense = ffn(x, (H, W), mask)
    rows = mask.flatten().nonzero().squeeze(1)
    sparse = ffn.forward_sparse(x.reshape(-1, 8)[rows], rows, B, (H, W))
    torch.testing.assert_close(sparse, dense.reshape(-1, 8)[rows], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('sparse_dwconv,granularity', [('map', 'node'), ('gather', 'node'), ('map', 'block'),
                                                      ('gather', 'block')])
def test_sparse_inference_equals_masked_dense(sparse_dwconv, granularity):
    model = DiT(arch=TINY, sparse_dwconv=sparse_dwconv, row_gate_granularity=granularity).eval()
    _set_half_open(model)
    x = torch.randn(3, 3, 72, 56)
    rows_seen = []
    fc1 = model.nodes['0_0'].blocks[0].ffn.fc1
    handle = fc1.register_forward_hook(lambda m, i, o: rows_seen.append(i[0].shape[:-1].numel()))
    with torch.no_grad():
        model.sparse_inference = True
        sparse = model(x)
        r_sparse, f_sparse = sparse.routing, sparse.complexity['flops']
        model.sparse_inference = False
        dense = model(x)
    handle.remove()
    for a, b in zip(sparse, dense):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert torch.equal(f_sparse, dense.complexity['flops'])
    routed = r_sparse['row'][(0, 0)][:, 0]
    assert 0.2 < float(routed.mean()) < 0.8
    # the sparse fc1 saw only the routed tokens, the dense one all of them
    assert rows_seen == [int(routed.sum()), 3 * 18 * 14]
    # and the FLOPs of the hard gates are below the all-open FLOPs
    assert float(f_sparse.max()) < model.dense_flops((72, 56))


def test_skipped_everything_and_dead_nodes():
    model = DiT(arch=TINY).eval()
    for gate in model.gates():
        gate.bias_ema.copy_(torch.tensor([5.0, -5.0]))  # every gate closed
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        outs = model(x)
    assert all(float(a.max()) == 0 for k, a in outs.routing['alive'].items() if k != (0, 0) and k[0] > 0)
    # only the stem and the gates cost anything
    shapes = model.row_shapes((32, 32))
    gates = sum(model.node_gate_flops(f'{i}_{j}', shapes[i]) for (i, j) in model.node_ids)
    gates += sum(model.embeds[f'{i}_{j}'].gate_flops(shapes[i]) for (i, j) in model.edge_ids)
    assert gates > 0
    assert float(outs.complexity['flops'][0]) == model.stem_flops((32, 32)) + gates
    assert all(torch.isfinite(o).all() for o in outs)


# ----------------------------------------------------------------------------------------------------------
# the complexity constraint
# ----------------------------------------------------------------------------------------------------------
def test_budget_loss_values_and_ramp():
    loss = DiTBudgetLoss(mu=0.5, loss_weight=2.0, warmup_iters=4).train()
    c = dict(flops=torch.tensor([60., 80.]), dense_flops=100., pvtv2_flops=50.)
    vals = [float(loss(c)) for _ in range(6)]
    full = 2.0 * ((0.1 ** 2 + 0.3 ** 2) / 2)
    assert vals[0] == 0 and vals[2] == pytest.approx(full / 2) and vals[5] == pytest.approx(full)
    assert float(DiTBudgetLoss(mu=0.5, reduction='batch')(c)) == pytest.approx(2 * 0.2 ** 2)
    assert float(DiTBudgetLoss(mu=1.0, base='pvtv2')(c)) == pytest.approx(2 * (0.2 ** 2 + 0.6 ** 2) / 2)


@pytest.mark.parametrize('mu', [0.35, 0.75])
def test_budget_loss_pulls_routed_fraction_to_mu(mu):
    """A tiny training run on the budget loss (plus a small task loss): the hard-gate FLOPs ratio of the
    eval model moves from ~1 to mu."""
    torch.manual_seed(0)
    model = DiT(arch=TINY, gate_momentum=0.0)  # momentum 0: the eval gates follow the trained ones
    budget = DiTBudgetLoss(mu=mu, loss_weight=2.0)
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if 'gate' in n], lr=0.05)
    x = torch.randn(4, 3, 32, 32)

    def eval_ratio():
        model.eval()
        with torch.no_grad():
            out = model(x)
        model.train()
        return float(budget.ratio(out.complexity).mean())

    start = eval_ratio()
    for _ in range(40):
        outs = model(x)
        loss = budget(outs.complexity) + 1e-3 * sum(o.pow(2).mean() for o in outs)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model(x)  # momentum update with the last step's weights
    end = eval_ratio()
    assert start > 0.95
    assert abs(end - mu) < 0.1, (start, end)


# ----------------------------------------------------------------------------------------------------------
# the models that add loss_budget, and every config
# ----------------------------------------------------------------------------------------------------------
def _cfg(path, tiny=True):
    cfg = Config.fromfile(os.path.join(REPO, path))
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    if tiny:
        cfg.model.backbone.arch = TINY
        cfg.model.backbone.pop('init_cfg', None)
        if 'neck' in cfg.model and cfg.model.neck.get('type') != 'GlobalAveragePooling':
            cfg.model.neck.in_channels = list(TINY['embed_dims'])
        if cfg.model.get('head', None) is not None:
            cfg.model.head.in_channels = TINY['embed_dims'][-1]
    return cfg


def _assert_budget_in_loss(model, losses):
    assert 'loss_budget' in losses and 'budget_ratio' in losses
    assert losses['loss_budget'].requires_grad
    total, _ = model.parse_losses(losses)
    gate_w = model.backbone.nodes['0_0'].gate.fc.weight
    (g, ) = torch.autograd.grad(losses['loss_budget'], gate_w, allow_unused=True, retain_graph=True)
    assert g is not None and float(g.abs().sum()) > 0
    total.backward()


def test_classifier_adds_budget_loss():
    from mmpretrain.structures import DataSample
    cfg = _cfg('configs/mmpretrain/dit/dit-b1_8xb128_in1k.py')
    cfg.model.head.num_classes = 10
    # mmpretrain's Runner takes the data preprocessor from the config's top level
    cfg.model.data_preprocessor = dict(type='ClsDataPreprocessor', num_classes=10, **{
        k: v for k, v in cfg.data_preprocessor.items() if k in ('mean', 'std', 'to_rgb')})
    cfg.model.budget_loss.warmup_iters = 0
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'DiTImageClassifier'
    model.train()
    data = dict(inputs=[torch.randint(0, 255, (3, 48, 48), dtype=torch.uint8) for _ in range(2)],
                data_samples=[DataSample().set_gt_label(i) for i in range(2)])
    data = model.data_preprocessor(data, True)
    losses = model(**data, mode='loss')
    _assert_budget_in_loss(model, losses)


@pytest.mark.parametrize('config', ['configs/mmdet/dit/retinanet_dit-b1_fpn_1x_coco.py',
                                    'configs/mmdet/dit/mask-rcnn_dit-b1_fpn_1x_coco.py'])
def test_detectors_add_budget_loss(config):
    from mmdet.testing import demo_mm_inputs
    cfg = _cfg(config)
    cfg.model.budget_loss.warmup_iters = 0
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == ('DiTRetinaNet' if 'retina' in config else 'DiTMaskRCNN')
    model.train()
    packed = demo_mm_inputs(2, [[3, 64, 64]] * 2, num_items=[2, 2], with_mask="mask" in config)
    data = model.data_preprocessor(packed, True)
    losses = model(**data, mode='loss')
    _assert_budget_in_loss(model, losses)


def test_segmentor_adds_budget_loss():
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    cfg = _cfg('configs/mmseg/dit/fpn_dit-b1_4xb4-40k_ade20k-512x512.py')
    cfg.model.data_preprocessor.size = (64, 64)
    cfg.model.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.model.budget_loss.warmup_iters = 0
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'DiTEncoderDecoder'
    model.train()
    samples = []
    for _ in range(2):
        s = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, 150, (1, 64, 64))))
        s.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)] * 2,
                                        data_samples=samples), True)
    losses = model(**data, mode='loss')
    _assert_budget_in_loss(model, losses)


ALL_CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, 'configs', '*', 'dit', '*dit-*.py')))


def test_config_set_is_complete():
    names = {os.path.basename(p) for p in ALL_CONFIGS}
    for b in range(1, 6):
        assert f'dit-b{b}_8xb128_in1k.py' in names
    for b in range(1, 5):
        assert {f'retinanet_dit-b{b}_fpn_1x_coco.py', f'mask-rcnn_dit-b{b}_fpn_1x_coco.py',
                f'fpn_dit-b{b}_4xb4-40k_ade20k-512x512.py'} <= names
    for abl in ('static', 'fully', 'random', 'attention', 'scale-only', 'depth-only'):
        assert f'dit-b2-{abl}_8xb128_in1k.py' in names
    for b in range(2, 5):  # Table 3
        assert {f'retinanet_dit-b{b}_fpn_ms-640-800-3x_coco.py', f'mask-rcnn_dit-b{b}_fpn_ms-640-800-3x_coco.py'} <= names
    for det in ('cascade-mask-rcnn', 'atss', 'gfl', 'sparse-rcnn'):  # Table 2
        assert f'{det}_dit-b2_fpn_1x_coco.py' in names


EXPECTED_TYPES = {'mmpretrain': 'DiTImageClassifier', 'retinanet': 'DiTRetinaNet', 'mask-rcnn': 'DiTMaskRCNN',
                  'cascade-mask-rcnn': 'DiTCascadeRCNN', 'atss': 'DiTATSS', 'gfl': 'DiTGFL',
                  'sparse-rcnn': 'DiTSparseRCNN', 'mmseg': 'DiTEncoderDecoder'}
ABLATION_GATES = {'static': ('static', 'open'), 'fully': ('open', 'open'), 'random': ('random', 'open'),
                  'attention': ('attention', 'open'), 'scale-only': ('open', 'learned'),
                  'depth-only': ('learned', 'open')}


@pytest.mark.parametrize('config', ALL_CONFIGS)
def test_config_builds(config):
    cfg = _cfg(config, tiny=False)
    assert cfg.custom_imports == dict(imports=['dgmn_mm'], allow_failed_imports=False)
    with torch.device('meta'), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(cfg.model)
    key = 'mmpretrain' if '/mmpretrain/' in config else 'mmseg' if '/mmseg/' in config else \
        os.path.basename(config).split('_dit-')[0]
    assert type(model).__name__ == EXPECTED_TYPES[key]
    assert isinstance(model.backbone, DiT) and isinstance(model.budget_loss, DiTBudgetLoss)
    arch = cfg.model.backbone.arch
    assert model.backbone.arch_settings['depths'] == DiT.arch_zoo[arch]['depths']
    n = sum(p.numel() for p in model.backbone.parameters())
    assert abs((n + 513000) / 1e6 / PAPER_PARAMS[arch] - 1) < 0.01
    for abl, (row, col) in ABLATION_GATES.items():
        if f'-{abl}_' in config:
            assert model.backbone.nodes['1_1'].gate.mode == row
            assert model.backbone.embeds['1_1'].gate.mode == col
    if key != 'mmpretrain':
        assert model.backbone.out_indices == (0, 1, 2, 3)
        assert list(cfg.model.neck.in_channels) == [64, 128, 320, 512]


# ----------------------------------------------------------------------------------------------------------
# tools
# ----------------------------------------------------------------------------------------------------------
def test_visualize_routing_tool(tmp_path):
    tool = _load_tool('visualize_dit_routing')
    model = DiT(arch=TINY).eval()
    _set_half_open(model)
    import numpy as np
    img, fg = tool.synthetic_image(64, np.random.default_rng(0))
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and 0 < fg.mean() < 1
    routing = tool.route(model, tool.to_tensor(img))
    out = tool.draw(img, model, routing, str(tmp_path / 'r.png'))
    with open(out, 'rb') as f:
        assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    assert os.path.getsize(out) > 5000

"""Tests of the DGMN module (CVPR 2020 / TPAMI 2022 Sec. 3.2-3.5), DGMNHead and their configs."""
import math
import os

import pytest
import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config, ConfigDict
from mmengine.registry import init_default_scope

from dgmn_mm.models.layers.dgmn import DGMN, dgmn_complexity
from dgmn_mm.registry import MODELS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))



pytestmark = pytest.mark.usefixtures('one_thread')  # tests/conftest.py


# (dynamic_sampling, dynamic_weights, dynamic_affinity, release_branch4_bug)
VARIANTS = {
    'base': (False, False, False, False),
    'da': (False, False, True, False),
    'da-dw': (False, True, True, False),
    'da-dw-ds': (True, True, True, False),
    'dw-ds': (True, True, False, False),
    'da-ds': (True, False, True, False),
    'release-bug': (True, True, True, True),
}
CONCAT_VARIANTS = [v for v in VARIANTS if v != 'release-bug']


def build_dgmn(variant, channels=8, dilations=(1, 2, 3, 5), groups=4, walk_scale=3.0, fusion='scale'):
    ds, dw, da, bug = VARIANTS[variant]
    extra = dict(fuse_norm_cfg=dict(type='GN', num_groups=4)) if fusion == 'concat' else {}
    m = DGMN(channels, dilations=dilations, groups=groups, dynamic_sampling=ds, dynamic_weights=dw,
             dynamic_affinity=da, release_branch4_bug=bug, fusion=fusion, **extra)
    with torch.no_grad():  # move every parameter away from its special init value
        if fusion == 'concat':
            K = m.num_nodes
            if m.num_pred_channels:
                for c in m.pred_convs:
                    c.weight.mul_(5.0)
                    if ds:  # walks of a few pixels, some leaving the map
                        start = groups * K * dw
                        c.weight[start:start + 2 * K].mul_(walk_scale / 5.0 * 3.0)
            m.fuse.gn.weight.uniform_(0.5, 1.5)
            m.fuse.gn.bias.uniform_(0.0, 0.5)  # most of the ReLU inputs stay positive
            return m
        m.beta.uniform_(0.5, 1.5)
        if not dw:
            m.static_filters.normal_()
        if ds:
            for c in m.walk_convs:  # walks of a few pixels, some leaving the map
                c.weight.mul_(walk_scale)
        if m.num_pred_channels:
            for c in m.filter_affinity_convs:
                c.weight.mul_(5.0)
    return m


# --------------------------------------------------------------------------------------------------------
# Plain-loop reference: one receiving node, one tap, one corner at a time
# --------------------------------------------------------------------------------------------------------
def _bilinear(feat, py, px):
    """DCNv1 bilinear read of feat (C, H, W) at (py, px) (0-d tensors), zeros outside; differentiable in p."""
    C, H, W = feat.shape
    if not (-1 < float(py) < H and -1 < float(px) < W):
        return feat.new_zeros(C)
    y0, x0 = math.floor(float(py)), math.floor(float(px))
    ly, lx = py - y0, px - x0
    val = feat.new_zeros(C)
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < H and 0 <= xx < W:
                val = val + wy * wx * feat[:, yy, xx]
    return val


def reference_dgmn(m, x):
    """Eqs. 3-7 written as loops over images, receiving nodes i, rates q and taps k."""
    B, C, H, W = x.shape
    ks, K, G = m.kernel_size, m.num_nodes, m.groups
    R, c0 = C // G, (ks - 1) // 2
    rows = []
    for b in range(B):
        feat = x[b]
        out = feat.clone()
        msgs = [[None] * W for _ in range(H)]
        for y in range(H):
            for xc in range(W):
                total = feat.new_zeros(C)
                for q, r in enumerate(m.dilations):
                    # uniformly sampled nodes v_i (integer positions)
                    taps = [(y + r * (a - c0), xc + r * (bb - c0)) for a in range(ks) for bb in range(ks)]
                    v = torch.stack([feat[:, ty, tx] if (0 <= ty < H and 0 <= tx < W) else feat.new_zeros(C)
                                     for ty, tx in taps], dim=1)  # (C, K)
                    if m.dynamic_sampling:  # Eq. 4
                        walk = torch.einsum('ock,ck->o', m.walk_convs[q].weight.reshape(2 * K, C, K), v)
                        nodes = torch.stack([_bilinear(feat, ty + walk[2 * k], tx + walk[2 * k + 1])
                                             for k, (ty, tx) in enumerate(taps)], dim=1)  # (C, K), Eq. 5
                    else:
                        nodes = v
                    if m.num_pred_channels:  # Eq. 6 over the sampled nodes
                        wka = m.filter_affinity_convs[q].weight.reshape(m.num_pred_channels, C, K)
                        o = torch.einsum('ock,ck->o', wka, nodes)
                    filt = o[:G * K].reshape(G, K) if m.dynamic_weights else m.static_filters[q]
                    if m.dynamic_affinity:  # Eq. 7
                        start = G * K if m.dynamic_weights else 0
                        if m.release_branch4_bug and q == 3:
                            start = G * K - K
                        aff = torch.softmax(o[start:start + K], dim=0)
                    else:
                        aff = feat.new_full((K, ), 1. / K)
                    msg = feat.new_zeros(C)
                    group_of_channel = torch.arange(C) // R  # contiguous channel groups g(c) = c // R
                    for k in range(K):
                        msg = msg + aff[k] * filt[group_of_channel, k] * nodes[:, k]
                    total = total + m.beta[q] * msg
                msgs[y][xc] = total
        out = out + torch.stack([torch.stack(row, dim=1) for row in msgs], dim=1)
        rows.append(out)
    return torch.stack(rows)


def reference_concat(m, x):
    """The release's fused layout (``DynamicWeightsCat33``) written as loops: per receiving node, one 3x3
    prediction over the uniform nodes -> [G*K filters (softmax over K)][2K walks][K affinities (sigmoid with
    DW, softmax without)]; then x + ReLU(GroupNorm(W [x, M_1..M_S] + b)), GroupNorm written out."""
    B, C, H, W = x.shape
    ks, K, G = m.kernel_size, m.num_nodes, m.groups
    R, c0 = C // G, (ks - 1) // 2
    ds, dw, da = m.dynamic_sampling, m.dynamic_weights, m.dynamic_affinity
    group_of_channel = torch.arange(C) // R
    outs = []
    for b in range(B):
        feat = x[b]
        msg_maps = []
        for q, r in enumerate(m.dilations):
            rows = []
            for y in range(H):
                row = []
                for xc in range(W):
                    taps = [(y + r * (a - c0), xc + r * (bb - c0)) for a in range(ks) for bb in range(ks)]
                    v = torch.stack([feat[:, ty, tx] if (0 <= ty < H and 0 <= tx < W) else feat.new_zeros(C)
                                     for ty, tx in taps], dim=1)  # (C, K) uniform nodes
                    if m.num_pred_channels:
                        wp = m.pred_convs[q].weight.reshape(m.num_pred_channels, C, K)
                        o = torch.einsum('ock,ck->o', wp, v)
                    start = 0
                    if dw:
                        filt = torch.softmax(o[:G * K].reshape(G, K), dim=1)
                        start = G * K
                    else:
                        filt = feat.new_ones(G, K)
                    if ds:
                        walk = o[start:start + 2 * K]
                        start += 2 * K
                        nodes = torch.stack([_bilinear(feat, ty + walk[2 * k], tx + walk[2 * k + 1])
                                             for k, (ty, tx) in enumerate(taps)], dim=1)
                    else:
                        nodes = v
                    if da:
                        logits = o[start:start + K]
                        aff = torch.sigmoid(logits) if dw else torch.softmax(logits, dim=0)
                    else:
                        aff = feat.new_full((K, ), 1.0 if dw else 1. / K)
                    msg = feat.new_zeros(C)
                    for k in range(K):
                        msg = msg + aff[k] * filt[group_of_channel, k] * nodes[:, k]
                    row.append(msg)
                rows.append(torch.stack(row, dim=1))
            msg_maps.append(torch.stack(rows, dim=1))  # (C, H, W)
        cat = torch.cat([feat] + msg_maps, dim=0)  # ((S+1)C, H, W)
        conv = m.fuse.conv
        z = torch.einsum('oc,chw->ohw', conv.weight[:, :, 0, 0], cat) + conv.bias[:, None, None]
        gn = m.fuse.gn
        zg = z.reshape(gn.num_groups, -1)
        mean = zg.mean(dim=1, keepdim=True)
        var = zg.var(dim=1, unbiased=False, keepdim=True)
        zn = ((zg - mean) / torch.sqrt(var + gn.eps)).reshape(C, H, W)
        zn = zn * gn.weight[:, None, None] + gn.bias[:, None, None]
        outs.append(feat + torch.relu(zn))
    return torch.stack(outs)


@pytest.mark.parametrize('variant', CONCAT_VARIANTS)
@pytest.mark.parametrize('shape', [(2, 3, 4), (1, 1, 2)])
def test_concat_matches_loop_reference(variant, shape):
    B, H, W = shape
    m = build_dgmn(variant, fusion='concat', dilations=(1, 2, 5))
    x = torch.randn(B, 8, H, W)
    out = m(x)
    ref = reference_concat(m, x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x, atol=1e-3)  # the fused messages are not negligible
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_concat_walk_gradients_match_reference():
    """With DS the walk channels of the shared predictor get gradients equal to the loop reference's."""
    m = build_dgmn('da-dw-ds', fusion='concat', dilations=(1, 3), groups=2)
    x = torch.randn(1, 8, 4, 5, requires_grad=True)
    w_out = torch.randn(1, 8, 4, 5)
    (m(x) * w_out).sum().backward()
    grads = [c.weight.grad.clone() for c in m.pred_convs]
    gx = x.grad.clone()
    K = 9
    for g in grads:  # the walk rows (after the 2 x 9 filters) really learn
        assert torch.isfinite(g).all() and g[2 * K:4 * K].abs().sum() > 0
    m.zero_grad()
    x.grad = None
    (reference_concat(m, x) * w_out).sum().backward()
    for g, c in zip(grads, m.pred_convs):
        torch.testing.assert_close(g, c.weight.grad, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(gx, x.grad, rtol=1e-3, atol=1e-4)


def test_concat_parts_and_release_layout():
    """Per rate one plain dilated 3x3 conv [G*K][2K][K] (release cat{a..d}); fusion 1x1 conv (S+1)C -> C with
    bias, GroupNorm(32) and ReLU (release scale2); no beta, no walk convs, no static filters."""
    C, K = 64, 9
    for (ds, dw, da), G, P in [((False, False, True), 4, K), ((False, True, True), 4, 4 * K + K),
                               ((True, True, True), 2, 2 * K + 2 * K + K), ((True, True, True), 4, 63),
                               ((False, False, False), 4, 0), ((True, False, False), 4, 2 * K)]:
        rates = (1, 6, 12)
        m = DGMN(C, dilations=rates, groups=G, dynamic_sampling=ds, dynamic_weights=dw, dynamic_affinity=da,
                 fusion='concat')
        assert m.num_pred_channels == P
        assert not hasattr(m, 'beta') and not hasattr(m, 'walk_convs') and not hasattr(m, 'static_filters')
        assert not hasattr(m, 'filter_affinity_convs')
        if P:
            assert all(type(c) is nn.Conv2d and c.bias is None and c.out_channels == P for c in m.pred_convs)
            assert [c.dilation for c in m.pred_convs] == [(r, r) for r in rates]
            assert [c.padding for c in m.pred_convs] == [(r, r) for r in rates]
        else:
            assert not hasattr(m, 'pred_convs')
        assert m.fuse.conv.in_channels == 4 * C and m.fuse.conv.out_channels == C
        assert m.fuse.conv.kernel_size == (1, 1) and m.fuse.conv.bias is not None
        assert isinstance(m.fuse.gn, nn.GroupNorm) and m.fuse.gn.num_groups == 32
        assert isinstance(m.fuse.relu, nn.ReLU)
        n = sum(p.numel() for p in m.parameters())
        assert n == 3 * C * P * K + 4 * C * C + C + 2 * C
    # the default ('scale') is unchanged
    assert DGMN(64).fusion == 'scale' and hasattr(DGMN(64), 'beta')


def test_concat_base_is_mean_of_uniform_nodes():
    """concat base: the messages are the means of the 9 uniform nodes, fused by the 1x1 conv."""
    m = DGMN(32, dilations=(1, 2), dynamic_sampling=False, dynamic_weights=False, dynamic_affinity=False,
             fusion='concat')
    x = torch.randn(1, 32, 6, 7)
    mean = torch.full((32, 1, 3, 3), 1. / 9)
    msgs = [nn.functional.conv2d(x, mean, padding=r, dilation=r, groups=32) for r in (1, 2)]
    for q in range(2):
        torch.testing.assert_close(m.message(x, q), msgs[q])
    torch.testing.assert_close(m(x), x + m.fuse(torch.cat([x] + msgs, dim=1)))


@pytest.mark.parametrize('variant', list(VARIANTS))
@pytest.mark.parametrize('shape', [(2, 3, 4), (1, 1, 2)])
def test_matches_loop_reference(variant, shape):
    B, H, W = shape
    m = build_dgmn(variant)
    x = torch.randn(B, 8, H, W)
    out = m(x)
    ref = reference_dgmn(m, x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x, atol=1e-3)  # the messages are not negligible
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_walk_gradients_match_reference():
    """Gradients reach the walk predictor and equal the loop reference's (offset grads of DCN + sampler)."""
    m = build_dgmn('da-dw-ds', dilations=(1, 3))
    x = torch.randn(1, 8, 4, 5, requires_grad=True)
    w_out = torch.randn(1, 8, 4, 5)
    (m(x) * w_out).sum().backward()
    grads = [c.weight.grad.clone() for c in m.walk_convs]
    gx = x.grad.clone()
    for g in grads:
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    m.zero_grad()
    x.grad = None
    (reference_dgmn(m, x) * w_out).sum().backward()
    for g, c in zip(grads, m.walk_convs):
        torch.testing.assert_close(g, c.weight.grad, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(gx, x.grad, rtol=1e-3, atol=1e-4)
    for c in m.filter_affinity_convs:
        assert c.weight.grad.abs().sum() > 0
    assert m.beta.grad.abs().min() > 0


def test_variants_have_the_right_parts():
    C, S, K, G = 16, 4, 9, 4
    expect = {  # per-rate predictor channels, walk convs present, static filters present
        'base': (0, False, True),
        'da': (K, False, True),
        'da-dw': (G * K + K, False, False),
        'da-dw-ds': (G * K + K, True, False),
    }
    for variant, (P, has_walk, has_static) in expect.items():
        m = build_dgmn(variant, channels=C)
        assert m.num_pred_channels == P
        assert hasattr(m, 'walk_convs') == has_walk
        assert hasattr(m, 'static_filters') == has_static
        n = sum(p.numel() for p in m.parameters())
        assert n == S * (C * P * K + has_walk * C * 2 * K * K + has_static * G * K) + S
    full = DGMN(16)
    from mmcv.ops import DeformConv2d
    assert all(type(c) is DeformConv2d for c in full.filter_affinity_convs)
    assert all(type(c) is nn.Conv2d for c in DGMN(16, dynamic_sampling=False).filter_affinity_convs)
    # the released dilations, padding = dilation
    assert [c.dilation for c in full.walk_convs] == [(1, 1), (4, 4), (8, 8), (12, 12)]
    assert [c.padding for c in full.filter_affinity_convs] == [(1, 1), (4, 4), (8, 8), (12, 12)]


def test_base_is_uniform_mean_at_init():
    """base at init: H = F + sum_q mean of the 9 uniformly sampled nodes (zeros outside)."""
    m = DGMN(4, dilations=(1, 2), dynamic_sampling=False, dynamic_weights=False, dynamic_affinity=False)
    x = torch.randn(1, 4, 6, 7)
    expect = x.clone()
    for r in (1, 2):
        w = torch.full((4, 1, 3, 3), 1. / 9)
        expect = expect + nn.functional.conv2d(x, w, padding=r, dilation=r, groups=4)
    torch.testing.assert_close(m(x), expect)


def test_release_branch4_bug_switch():
    with pytest.raises(ValueError):
        DGMN(8, dilations=(1, 2, 3), release_branch4_bug=True)
    with pytest.raises(ValueError):
        DGMN(8, dynamic_weights=False, release_branch4_bug=True)
    good = build_dgmn('da-dw-ds')
    bug = build_dgmn('release-bug')
    bug.load_state_dict(good.state_dict())  # identical parameters
    assert not DGMN(8).release_branch4_bug  # off by default
    x = torch.randn(1, 8, 5, 6)
    for q in range(3):
        torch.testing.assert_close(good.message(x, q), bug.message(x, q))
    assert not torch.allclose(good.message(x, 3), bug.message(x, 3), atol=1e-4)


@pytest.mark.parametrize('shape', [(1, 1, 1), (3, 3, 5), (2, 13, 7), (33, 2, 3)])
def test_odd_input_sizes(shape):
    B, H, W = shape
    for variant in ('base', 'da-dw-ds'):
        m = build_dgmn(variant, channels=8, dilations=(1, 4, 8, 12))
        x = torch.randn(B, 8, H, W)
        y = m(x)
        assert y.shape == x.shape and torch.isfinite(y).all()
        # per-image computation: batching must not change the result (mmcv's im2col_step handling)
        torch.testing.assert_close(y[-1:], m(x[-1:]), rtol=1e-5, atol=1e-5)


def test_complexity_matches_flop_counter():
    """Analytic count = mmengine's FlopAnalyzer + what it misses (DeformConv2d, element-wise products)."""
    H, W = 7, 9
    for variant in ('base', 'da', 'da-dw', 'da-dw-ds'):
        m = build_dgmn(variant, channels=16).eval()
        fa = FlopAnalyzer(m, (torch.randn(1, 16, H, W), ))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        c = dgmn_complexity(m, (H, W))
        assert c['params'] == sum(p.numel() for p in m.parameters())
        missed = c['weight'] + c['scale']
        if m.dynamic_sampling:
            missed += c['pred']  # DeformConv2d is a Python autograd op: invisible to the counter
        assert fa.total() == pytest.approx(c['flops'] - missed, rel=1e-3)
        by_op = fa.by_operator()
        assert by_op.get('conv', 0) == c['walk'] + (0 if m.dynamic_sampling else c['pred'])
        assert by_op.get('grid_sampler', 0) == c['sampling']
        # paper convention: conv weights (standard and deformable) x H x W only
        S, K, C, P = len(m.dilations), 9, 16, m.num_pred_channels
        assert c['paper_flops'] == S * H * W * C * K * (2 * K * m.dynamic_sampling + P)
        assert c['paper_flops'] == by_op.get('conv', 0) + (c['pred'] - S * 4 * C * K * H * W
                                                            if m.dynamic_sampling else 0)


def test_concat_complexity_matches_flop_counter():
    """'concat': the analytic count = FlopAnalyzer's (convs, einsum, grid_sampler, group_norm) + w*A."""
    H, W = 7, 9
    for variant in ('base', 'da', 'da-dw', 'da-dw-ds', 'dw-ds'):
        m = build_dgmn(variant, channels=16, fusion='concat').eval()
        fa = FlopAnalyzer(m, (torch.randn(1, 16, H, W), ))
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        c = dgmn_complexity(m, (H, W))
        assert c['params'] == sum(p.numel() for p in m.parameters())
        assert fa.total() == pytest.approx(c['flops'] - c['weight'], rel=1e-3)
        by_op = fa.by_operator()
        assert by_op['conv'] == c['pred'] + c['fuse'] == c['paper_flops']
        assert by_op.get('grid_sampler', 0) == c['sampling']
        assert by_op['group_norm'] == c['norm']


def test_paper_scale_numbers():
    """Params of the Cityscapes head module (C = 512, five rates) and the COCO modules, as in the docs."""
    K, G = 9, 4
    full = DGMN(512, dilations=(1, 6, 12, 24, 36))
    c = dgmn_complexity(full, (97, 97))
    assert c['params'] == 5 * (512 * 18 * 9 + 512 * (G * K + K) * 9) + 5  # 1,451,525
    da = DGMN(512, dilations=(1, 6, 12, 24, 36), dynamic_sampling=False, dynamic_weights=False)
    assert dgmn_complexity(da, (97, 97))['params'] == 5 * (512 * 9 * 9 + G * K) + 5


# --------------------------------------------------------------------------------------------------------
# Plug-in, head and configs
# --------------------------------------------------------------------------------------------------------
def _syncbn_to_bn(cfg):
    if isinstance(cfg, dict):
        return {k: ('BN' if (k == 'type' and v == 'SyncBN') else _syncbn_to_bn(v)) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_syncbn_to_bn(v) for v in cfg)
    return cfg


def _dgmn_modules(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, DGMN)}


def test_plugin_into_resnets():
    """The issue's plugin config builds inside mmdet/mmseg ResNet and ResNeXt, at the 3x3 width (ResNet-101
    and ResNeXt-101 are built by the config tests below)."""
    plugin = [dict(cfg=dict(type='DGMN', dilations=(1, 4, 8, 12), groups=4),
                   stages=(False, False, False, True), position='after_conv2')]
    init_default_scope('mmdet')
    r50 = MODELS.build(dict(type='ResNet', depth=50, plugins=plugin))
    r50.eval()  # mmdet's ResNet.train() returns None
    mods = _dgmn_modules(r50)
    assert sorted(mods) == ['layer4.0.dgmn', 'layer4.1.dgmn', 'layer4.2.dgmn']
    assert all(m.in_channels == 512 and m.dilations == (1, 4, 8, 12) for m in mods.values())
    assert r50.layer4[0].after_conv2_plugin_names == ['dgmn']
    x = torch.randn(1, 3, 64, 64)
    outs = r50(x)
    assert outs[-1].shape == (1, 2048, 2, 2)
    # the module runs inside the block: removing it changes res5 only
    saved = r50.layer4[1].after_conv2_plugin_names
    r50.layer4[1].after_conv2_plugin_names = []
    outs2 = r50(x)
    torch.testing.assert_close(outs[2], outs2[2])
    assert not torch.allclose(outs[3], outs2[3])
    r50.layer4[1].after_conv2_plugin_names = saved

    x50 = MODELS.build(dict(type='ResNeXt', depth=50, groups=32, base_width=4, plugins=plugin))
    assert {m.in_channels for m in _dgmn_modules(x50).values()} == {1024}  # res5 width of 32x4d
    assert len(_dgmn_modules(x50)) == 3

    init_default_scope('mmseg')
    c4c5 = [dict(plugin[0], stages=(False, False, True, True))]
    r50 = MODELS.build(dict(type='ResNetV1c', depth=50, dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                            contract_dilation=True, plugins=c4c5))
    r50.eval()
    mods = _dgmn_modules(r50)
    assert len(mods) == 6 + 3
    assert {m.in_channels for m in mods.values()} == {256, 512}
    with torch.no_grad():
        assert r50(torch.randn(1, 3, 33, 31))[-1].shape == (1, 2048, 5, 4)


def test_init_weights_keeps_release_init():
    """A parent's Kaiming init_cfg on Conv2d must not overwrite the module's released initialisation."""
    from mmengine.model import BaseModule

    class Parent(BaseModule):

        def __init__(self):
            super().__init__(init_cfg=dict(type='Kaiming', layer='Conv2d'))
            self.conv = nn.Conv2d(64, 64, 3)
            self.dgmn = DGMN(64)

    parent = Parent()
    with torch.no_grad():
        for p in parent.dgmn.parameters():
            p.fill_(7.0)
    parent.init_weights()
    m = parent.dgmn
    bound = 1 / math.sqrt(64 * 9)
    assert parent.conv.weight.abs().max() > bound  # the parent's Kaiming init did run
    for c in m.filter_affinity_convs:
        assert c.weight.abs().max() <= bound and c.weight.std() > bound / 3
    for c in m.walk_convs:  # PyTorch default: kaiming_uniform(a=sqrt(5)) -> bound 1/sqrt(fan_in)
        assert c.weight.abs().max() <= bound + 1e-7 and c.weight.std() > bound / 3
    assert torch.equal(m.beta, torch.ones(4))


def test_dgmn_head():
    init_default_scope('mmseg')
    kw = dict(in_channels=64, channels=32, num_classes=5, concat_input=True, norm_cfg=dict(type='BN'))
    head = MODELS.build(dict(type='DGMNHead', **kw))
    fcn = MODELS.build(dict(type='FCNHead', **kw))
    assert head.dgmn.dilations == (1, 6, 12, 24, 36) and head.dgmn.groups == 4
    n_head = sum(p.numel() for p in head.parameters())
    n_fcn = sum(p.numel() for p in fcn.parameters())
    assert n_head - n_fcn == sum(p.numel() for p in head.dgmn.parameters())
    x = [torch.randn(2, 64, 9, 11)]
    assert head(x).shape == (2, 5, 9, 11)
    # the DGMN really sits between convs[0] and convs[1]
    seen = []
    h = head.dgmn.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    head(x)
    h.remove()
    assert seen == [torch.Size([2, 32, 9, 11])]


MMSEG_CONFIGS = sorted(
    [os.path.join(REPO_ROOT, 'configs/mmseg/dgmn', f'dgmn-{v}_r101-d8_4xb2-40k_cityscapes-769x769.py')
     for v in ('base', 'da', 'da-dw', 'da-dw-ds')] + [
        os.path.join(REPO_ROOT, 'configs/mmseg/dgmn/baselines', n) for n in (
            'fcn_r101-d8_4xb2-40k_cityscapes-769x769.py', 'nonlocal_r101-d8_4xb2-40k_cityscapes-769x769.py',
            'deeplabv3_r101-d8_4xb2-40k_cityscapes-769x769.py',
            'fcn-dcnv2_r101-d8_4xb2-40k_cityscapes-769x769.py')])
MMDET_CONFIGS = [  # the paper's COCO rows (Tables 3 and 5)
    os.path.join(REPO_ROOT, 'configs/mmdet/dgmn', f'mask-rcnn_{n}_fpn_1x_coco.py')
    for n in ('r50-dgmn-res4', 'r50-dgmn-c5', 'r50-dgmn-c4c5', 'r101-dgmn-c5', 'x101-64x4d-dgmn-c5')]

SEG_SWITCHES = {  # config variant -> (DS, DW, DA)
    'base': (False, False, False), 'da': (False, False, True), 'da-dw': (False, True, True),
    'da-dw-ds': (True, True, True)}


# config -> (sampling rates, G): supplementary Table 14 (phi = {1} for DA and DA+DW), G = 2 for the full row
SEG_RATES_GROUPS = {'dgmn-base': ((1, 6, 12, 24, 36), 4), 'dgmn-da': ((1, ), 4), 'dgmn-da-dw': ((1, ), 4),
                    'dgmn-da-dw-ds': ((1, 6, 12, 24, 36), 2)}
# paper Table 2: +Params (M), +FLOPs (G) over the Dilated FCN
PAPER_TABLE2 = {'da': (0.57, 5.32), 'da-dw': (0.73, 6.88), 'da-dw-ds': (2.61, 24.55)}


def _seg_model(name):
    cfg = Config.fromfile(os.path.join(REPO_ROOT, 'configs/mmseg/dgmn', name))
    init_default_scope('mmseg')
    return cfg, MODELS.build(ConfigDict(_syncbn_to_bn(cfg.model.to_dict())))


def test_table2_increments_match_the_paper():
    """The three Table 2 configs against the Dilated-FCN baseline config (mmseg's FCN, the paper's baseline):
    parameter increments and paper-convention FLOPs (standard-conv multiply-adds at the 97 x 97 head map of a
    769 crop) within 3 % of the paper's; the increments are exactly the DGMN modules."""
    _, fcn = _seg_model('baselines/fcn_r101-d8_4xb2-40k_cityscapes-769x769.py')
    n_fcn = sum(p.numel() for p in fcn.parameters())
    for variant, (p_params, p_flops) in PAPER_TABLE2.items():
        cfg, model = _seg_model(f'dgmn-{variant}_r101-d8_4xb2-40k_cityscapes-769x769.py')
        assert cfg.crop_size == (769, 769)
        hw = (math.ceil(769 / 8), ) * 2  # output stride 8
        assert hw == (97, 97)
        inc = sum(p.numel() for p in model.parameters()) - n_fcn
        m = model.decode_head.dgmn
        c = dgmn_complexity(m, hw)
        assert inc == c['params']
        assert inc / 1e6 == pytest.approx(p_params, rel=0.03), variant
        assert c['paper_flops'] / 1e9 == pytest.approx(p_flops, rel=0.03), variant
        # and to the paper's rounding (2 decimals)
        assert round(inc / 1e6, 2) == p_params and round(c['paper_flops'] / 1e9, 2) == p_flops
    # the DW step alone is one 3x3 conv 512 -> 36 at phi = {1}: 0.166M, 1.56G (the paper's 0.73 - 0.57)
    da = dgmn_complexity(DGMN(512, dilations=(1, ), dynamic_sampling=False, dynamic_weights=False,
                              fusion='concat'), (97, 97))
    da_dw = dgmn_complexity(DGMN(512, dilations=(1, ), dynamic_sampling=False, fusion='concat'), (97, 97))
    assert da_dw['params'] - da['params'] == 512 * 36 * 9
    assert da_dw['paper_flops'] - da['paper_flops'] == 512 * 36 * 9 * 97 * 97


def test_head_records_its_input_size():
    """record_dgmn_inputs / dgmn_report (used by get_flops.py) see the map the head's module runs on."""
    from dgmn_mm.models.layers.dgmn import dgmn_report, record_dgmn_inputs
    init_default_scope('mmseg')
    head = MODELS.build(dict(type='DGMNHead', in_channels=64, channels=32, num_classes=5, dilations=(1, 2),
                             fusion='concat', fuse_norm_cfg=dict(type='GN', num_groups=8),
                             norm_cfg=dict(type='BN')))
    head.eval()
    with record_dgmn_inputs(head) as shapes:
        with torch.no_grad():
            head([torch.randn(1, 64, 9, 11)])
    assert {k: v[1] for k, v in shapes.items()} == {'dgmn': (9, 11)}
    rep = dgmn_report(shapes)
    c = dgmn_complexity(head.dgmn, (9, 11))
    assert rep == dict(modules=1, params=c['params'], flops=c['flops'], paper_flops=c['paper_flops'])
    assert not head.dgmn._forward_pre_hooks  # hooks removed


def test_config_sets_complete():
    names = {os.path.basename(p) for p in MMSEG_CONFIGS + MMDET_CONFIGS}
    for v in SEG_SWITCHES:
        assert f'dgmn-{v}_r101-d8_4xb2-40k_cityscapes-769x769.py' in names
    for n in ('r50-dgmn-res4', 'r50-dgmn-c5', 'r50-dgmn-c4c5', 'r101-dgmn-c5', 'x101-64x4d-dgmn-c5'):
        assert f'mask-rcnn_{n}_fpn_1x_coco.py' in names
    assert all(os.path.isfile(p) for p in MMSEG_CONFIGS)


@pytest.mark.parametrize('path', MMSEG_CONFIGS, ids=os.path.basename)
def test_mmseg_config_builds_and_runs(path):
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['dgmn_mm'], allow_failed_imports=False)
    assert cfg.train_cfg.max_iters == 40000 and cfg.crop_size == (769, 769)
    assert cfg.model.backbone.depth == 101 and cfg.model.backbone.dilations == (1, 1, 2, 4)
    init_default_scope('mmseg')
    model = MODELS.build(ConfigDict(_syncbn_to_bn(cfg.model.to_dict())))
    model.eval()
    name = os.path.basename(path)
    mods = _dgmn_modules(model)
    if name.startswith('dgmn-'):
        ds, dw, da = SEG_SWITCHES[name.split('_')[0][len('dgmn-'):]]
        assert list(mods) == ['decode_head.dgmn']
        m = mods['decode_head.dgmn']
        assert (m.dynamic_sampling, m.dynamic_weights, m.dynamic_affinity) == (ds, dw, da)
        assert m.dilations == SEG_RATES_GROUPS[name.split('_')[0]][0]
        assert m.groups == SEG_RATES_GROUPS[name.split('_')[0]][1]
        assert m.fusion == 'concat' and m.in_channels == 512 and not m.release_branch4_bug
    else:
        assert not mods
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), mode='tensor')
    assert out.shape == (1, 19, 8, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize('path', MMDET_CONFIGS, ids=os.path.basename)
def test_mmdet_config_builds_and_runs(path):
    from mmdet.testing import demo_mm_inputs
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(imports=['dgmn_mm'], allow_failed_imports=False)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.eval()
    mods = _dgmn_modules(model)
    assert all(m.dilations == (1, 4, 8, 12) and m.groups == 4 and m.dynamic_sampling and m.dynamic_weights
               and m.dynamic_affinity and not m.release_branch4_bug for m in mods.values())
    name = os.path.basename(path)
    expect = {  # module names -> in_channels
        'mask-rcnn_r50-dgmn-res4_fpn_1x_coco.py': {'backbone.layer3.5.pre_block_plugin': 1024},
        'mask-rcnn_r50-dgmn-c5_fpn_1x_coco.py': {f'backbone.layer4.{i}.dgmn': 512 for i in range(3)},
        'mask-rcnn_r50-dgmn-c4c5_fpn_1x_coco.py': {
            **{f'backbone.layer3.{i}.dgmn': 256 for i in range(6)},
            **{f'backbone.layer4.{i}.dgmn': 512 for i in range(3)}},
        'mask-rcnn_r101-dgmn-c5_fpn_1x_coco.py': {f'backbone.layer4.{i}.dgmn': 512 for i in range(3)},
        'mask-rcnn_x101-64x4d-dgmn-c5_fpn_1x_coco.py': {f'backbone.layer4.{i}.dgmn': 2048 for i in range(3)},
    }[name]
    assert {n: m.in_channels for n, m in mods.items()} == expect
    # parameter counts of the whole detectors (docs/dgmn.md; the paper's 51.1M for R-50 + DGMN (C4, C5))
    params = {'mask-rcnn_r50-dgmn-res4_fpn_1x_coco.py': 46.72, 'mask-rcnn_r50-dgmn-c5_fpn_1x_coco.py': 47.88,
              'mask-rcnn_r50-dgmn-c4c5_fpn_1x_coco.py': 51.36, 'mask-rcnn_r101-dgmn-c5_fpn_1x_coco.py': 66.87,
              'mask-rcnn_x101-64x4d-dgmn-c5_fpn_1x_coco.py': 116.23}[name]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == params
    assert all(m.fusion == 'scale' for m in mods.values())
    packed = demo_mm_inputs(1, [[3, 64, 64]], with_mask=True)
    data = model.data_preprocessor(packed, False)
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'])
        results = model(**data, mode='predict')
    assert len(feats) == 5 and feats[0].shape[-2:] == (16, 16)
    assert len(results) == 1 and hasattr(results[0], 'pred_instances')


def test_res4_placement_runs_before_last_block():
    """The res4 config applies the module to the input of layer3[-1] and keeps ResNet parameter names."""
    cfg = Config.fromfile(os.path.join(REPO_ROOT, 'configs/mmdet/dgmn/mask-rcnn_r50-dgmn-res4_fpn_1x_coco.py'))
    init_default_scope('mmdet')
    bb = MODELS.build(cfg.model.backbone)
    bb.eval()
    plain_cfg = {k: v for k, v in cfg.model.backbone.items() if k not in ('resnet_type', 'pre_block_plugins')}
    plain = MODELS.build(dict(plain_cfg, type='ResNet'))
    extra = set(bb.state_dict()) - set(plain.state_dict())
    assert set(plain.state_dict()) <= set(bb.state_dict())
    assert extra and all(k.startswith('layer3.5.pre_block_plugin.') for k in extra)
    seen = []
    bb.layer3[5].register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        bb(x)
        y = bb.layer2(bb.layer1(bb.maxpool(bb.relu(bb.norm1(bb.conv1(x))))))
        for block in list(bb.layer3)[:5]:
            y = block(y)
        torch.testing.assert_close(seen[0], bb.layer3[5].pre_block_plugin(y))


# --------------------------------------------------------------------------------------------------------
# Argument validation and the ResNet builder's new home
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs, exc, words', [
    (dict(in_channels=0), ValueError, 'in_channels'),
    (dict(in_channels=-8), ValueError, 'in_channels'),
    (dict(in_channels=8.0), ValueError, 'in_channels'),
    (dict(in_channels=True), ValueError, 'in_channels'),
    (dict(in_channels=10), ValueError, 'divisible by groups'),
    (dict(dilations=()), ValueError, 'dilations'),
    (dict(dilations=(1, 0)), ValueError, 'dilations'),
    (dict(dilations=(1, 1.5)), ValueError, 'dilations'),
    (dict(dilations=(1, True)), ValueError, 'dilations'),
    (dict(dilations=3), ValueError, 'dilations'),
    (dict(dilations='12'), ValueError, 'dilations'),
    (dict(groups=0), ValueError, 'groups'),
    (dict(groups=2.0), ValueError, 'groups'),
    (dict(kernel_size=2), ValueError, 'kernel_size'),
    (dict(kernel_size=0), ValueError, 'kernel_size'),
    (dict(kernel_size=3.0), ValueError, 'kernel_size'),
    (dict(dynamic_sampling=1), TypeError, 'dynamic_sampling'),
    (dict(dynamic_weights='yes'), TypeError, 'dynamic_weights'),
    (dict(dynamic_affinity=None), TypeError, 'dynamic_affinity'),
    (dict(release_branch4_bug=0), TypeError, 'release_branch4_bug'),
    (dict(fusion='sum'), ValueError, "('scale', 'concat')"),
    (dict(fusion='concat', release_branch4_bug=True), ValueError, 'release_branch4_bug'),
    (dict(fusion='concat', fuse_norm_cfg='GN'), TypeError, 'fuse_norm_cfg'),
    (dict(fuse_norm_cfg=dict(type='GN', num_groups=4)), ValueError, 'fuse_norm_cfg'),
    (dict(in_channels=48, fusion='concat'), ValueError, 'divisible by 32'),
])
def test_dgmn_rejects_bad_arguments(kwargs, exc, words):
    kw = dict(in_channels=8, dilations=(1, 2, 3, 4))
    kw.update(kwargs)
    with pytest.raises(exc, match=None) as info:
        DGMN(**kw)
    assert words in str(info.value)


def test_dgmn_rejects_bad_input():
    m = DGMN(8, dilations=(1, ))
    with pytest.raises(ValueError, match='expected'):
        m(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match='expected'):
        m(torch.randn(8, 5, 5))
    # valid corner cases still build
    assert DGMN(48, fusion='concat', fuse_norm_cfg=dict(type='GN', num_groups=16)).fusion == 'concat'
    assert DGMN(8, dilations=[2], kernel_size=1, groups=8).num_nodes == 1


@pytest.mark.parametrize('kwargs, exc, words', [
    (dict(dilations=(0, 6)), ValueError, 'dilations'),
    (dict(groups=3), ValueError, 'divisible by groups'),
    (dict(groups=-1), ValueError, 'groups'),
    (dict(dynamic_sampling='no'), TypeError, 'dynamic_sampling'),
    (dict(fusion='cat'), ValueError, 'fusion'),
    (dict(num_convs=1), ValueError, 'num_convs'),
    (dict(fusion='concat', channels=48), ValueError, 'divisible by 32'),
    (dict(release_branch4_bug=True, dilations=(1, 2)), ValueError, 'release_branch4_bug'),
])
def test_dgmn_head_rejects_bad_arguments(kwargs, exc, words):
    init_default_scope('mmseg')
    kw = dict(type='DGMNHead', in_channels=64, channels=32, num_classes=5, norm_cfg=dict(type='BN'))
    kw.update(kwargs)
    with pytest.raises(exc) as info:
        MODELS.build(kw)
    assert words in str(info.value)


def test_resnet_builder_lives_in_backbones():
    """`ResNetWithPreBlockPlugins` is registered from dgmn_mm.models.backbones.resnet_dgmn (same name)."""
    import dgmn_mm.models.backbones as backbones
    import dgmn_mm.models.layers as layers
    from dgmn_mm.models.backbones.resnet_dgmn import build_resnet_with_pre_block_plugins
    assert backbones.build_resnet_with_pre_block_plugins is build_resnet_with_pre_block_plugins
    assert not hasattr(layers, 'build_resnet_with_pre_block_plugins')
    assert MODELS.get('ResNetWithPreBlockPlugins') is build_resnet_with_pre_block_plugins
    init_default_scope('mmdet')
    base = dict(type='ResNetWithPreBlockPlugins', resnet_type='mmdet.ResNet', depth=50)
    dg = dict(cfg=dict(type='DGMN', dilations=(1, )), stage=2, block=-1)
    with pytest.raises(ValueError, match='stage'):
        MODELS.build(dict(base, pre_block_plugins=[dict(dg, stage=4)]))
    with pytest.raises(ValueError, match='block'):
        MODELS.build(dict(base, pre_block_plugins=[dict(dg, block=6)]))
    with pytest.raises(ValueError, match='already has a plug-in'):
        MODELS.build(dict(base, pre_block_plugins=[dg, dict(dg, block=5)]))
    with pytest.raises(ValueError, match='cfg=...'):
        MODELS.build(dict(base, pre_block_plugins=[dict(cfg=dg['cfg'], stage=2)]))
    with pytest.raises(TypeError, match='pre_block_plugins'):
        MODELS.build(dict(base, pre_block_plugins=dg))
    bb = MODELS.build(dict(base, pre_block_plugins=[dg]))
    assert bb.layer3[5].pre_block_plugin.in_channels == 1024


def test_get_flops_prints_the_paper_convention():
    """get_flops (dgmn_mm.analysis, the counter of tools/analysis_tools/get_flops.py) reports the DGMN modules in
    both conventions (small input here; at 769 x 769 the head map is 97 x 97 and the numbers are those of
    test_table2_increments_match_the_paper)."""
    from dgmn_mm.analysis import format_result, get_flops
    cfg = os.path.join(REPO_ROOT, 'configs/mmseg/dgmn/dgmn-da-dw-ds_r101-d8_4xb2-40k_cityscapes-769x769.py')
    res = get_flops(cfg, (64, 64), pad=False)
    _, model = _seg_model('dgmn-da-dw-ds_r101-d8_4xb2-40k_cityscapes-769x769.py')
    c = dgmn_complexity(model.decode_head.dgmn, (8, 8))
    assert res['dgmn'] == dict(modules=1, params=c['params'], flops=c['flops'], paper_flops=c['paper_flops'])
    text = format_result(res)
    assert "paper (conv-weight multiply-adds only" in text and f"{c['paper_flops'] / 1e9:.3f} G" in text
    assert 'DGMN modules (1): 2.611 M params' in text

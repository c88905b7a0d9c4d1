"""DGMN2 backbone: parameter counts, the exact math of the sampler / RelPos / attention against plain-loop
references written from the spec, shapes in every output mode, gradients, freezing, registration."""
import math

import pytest
import torch
import torch.nn.functional as F

from dgmn_mm.models.backbones.dgmn2 import DGMN2, DGMN2Attention, RelPosEmb
from dgmn_mm.models.layers.node_sampling import sample_nodes

TINY_ARCH = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 2, 2, 4), mlp_ratios=(2, 2, 2, 2))


# ---------------------------------------------------------------------------------------------------------
# parameter counts (official code, backbone without the classifier)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,expected', [('tiny', 11_588_464), ('small', 20_455_360),
                                           ('medium', 35_298_712), ('large', 47_773_762)])
def test_param_count_equals_official(arch, expected):
    model = DGMN2(arch)
    assert sum(p.numel() for p in model.parameters()) == expected
    # with the ImageNet head: the official 12.101M / 20.968M / 35.812M / 48.287M
    assert round((expected + 512 * 1000 + 1000) / 1e6, 3) == {
        'tiny': 12.101, 'small': 20.968, 'medium': 35.812, 'large': 48.287}[arch]


# ---------------------------------------------------------------------------------------------------------
# node sampling == the DCNv1 bilinear rule, written as a plain loop
# ---------------------------------------------------------------------------------------------------------
def dcn_bilinear(f, py, px):
    """deformable_im2col's rule for one channel map f (H, W) at one location."""
    H, W = f.shape
    if not (-1 < py < H and -1 < px < W):
        return 0.
    y0, x0 = math.floor(py), math.floor(px)
    ly, lx = py - y0, px - x0
    val = 0.
    for yy, xx, w in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                      (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        if 0 <= yy < H and 0 <= xx < W:
            val += w * float(f[yy, xx])
    return val


@pytest.mark.parametrize('dilation', [1, 3])
def test_sample_nodes_equals_loop_reference(dilation):
    B, C, H, W = 2, 3, 5, 7
    feat = torch.randn(B, C, H, W, dtype=torch.float64)
    walk = torch.randn(B, H, W, 9, 2, dtype=torch.float64) * 2
    walk[0, 0, 0] = torch.tensor([[-40., 3.], [0.5, 90.], [-1.2, -1.7]] * 3, dtype=torch.float64)  # far out
    walk[1, -1, -1, :, 0] = torch.linspace(-3, 3, 9, dtype=torch.float64)  # crossing the border
    walk[1, 2, 3, 4] = torch.tensor([-3., -4.], dtype=torch.float64)  # exactly on the -1 boundary
    out = sample_nodes(feat, walk, 3, dilation)
    assert out.shape == (B, C, H, W, 9)
    ref = torch.zeros_like(out)
    for b in range(B):
        for y in range(H):
            for x in range(W):
                for k in range(9):
                    py = y + dilation * (k // 3 - 1) + float(walk[b, y, x, k, 0])
                    px = x + dilation * (k % 3 - 1) + float(walk[b, y, x, k, 1])
                    for c in range(C):
                        ref[b, c, y, x, k] = dcn_bilinear(feat[b, c], py, px)
    assert torch.allclose(out, ref, atol=1e-12)
    assert (ref[0, :, 0, 0, :3] == 0).all()  # the far-out taps read zero


def test_sample_nodes_rejects_bad_walk_shape():
    with pytest.raises(ValueError, match='walk must have shape'):
        sample_nodes(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, 4, 2))


# ---------------------------------------------------------------------------------------------------------
# RelPos == the closed form of the official rel_to_abs trick
# ---------------------------------------------------------------------------------------------------------
def linear_resize_rows(t, length):
    """1-D linear resize along the rows, align_corners=False (what the official bilinear call does)."""
    L = t.shape[0]
    out = torch.empty(length, t.shape[1], dtype=t.dtype)
    for i in range(length):
        src = max((i + 0.5) * L / length - 0.5, 0.)
        i0 = min(int(math.floor(src)), L - 1)
        i1 = min(i0 + 1, L - 1)
        w = src - i0
        out[i] = (1 - w) * t[i0] + w * t[i1]
    return out


def relpos_closed_form(q, rel_h, rel_w, mode):
    """q: (H, W, d) -> (H, W, 9), loops over the spec's formulas."""
    H, W, d = q.shape
    Rw = linear_resize_rows(rel_w, W + 8)
    Rh = linear_resize_rows(rel_h, H + 8)
    r_w = torch.zeros(H, W, 9, dtype=q.dtype)
    T = torch.zeros(W, H, 9, dtype=q.dtype)  # official: height term on the transposed map
    r_h = torch.zeros(H, W, 9, dtype=q.dtype)
    for y in range(H):
        for x in range(W):
            for j in range(9):
                r_w[y, x, j] = q[y, x] @ Rw[W - 1 - x + j]
                T[x, y, j] = q[y, x] @ Rh[H - 1 - y + j]
                r_h[y, x, j] = q[y, x] @ Rh[H - 1 - y + j]
    if mode == 'corrected':
        return r_w + r_h
    if H == W:  # spec: pos[y, x, j] = q[y, x].rel_width[W-1-x+j] + q[x, y].rel_height[H-1-x+j]
        ref = torch.zeros(H, W, 9, dtype=q.dtype)
        for y in range(H):
            for x in range(W):
                for j in range(9):
                    ref[y, x, j] = q[y, x] @ Rw[W - 1 - x + j] + q[x, y] @ Rh[H - 1 - x + j]
        assert torch.allclose(ref, r_w + T, atol=1e-12)  # the two statements of the spec agree
        return ref
    T = F.interpolate(T.permute(2, 0, 1)[None], size=(H, W), mode='bilinear', align_corners=False)[0]
    return r_w + T.permute(1, 2, 0)


@pytest.mark.parametrize('mode', ['official', 'corrected'])
@pytest.mark.parametrize('hw,table', [((7, 7), (7, 7)), ((5, 9), (7, 7)), ((9, 4), (6, 6)), ((1, 6), (4, 4))])
def test_relpos_equals_closed_form(mode, hw, table):
    d = 4
    rel = RelPosEmb(table, d, mode).double()
    q = torch.randn(2, 3, *hw, d, dtype=torch.float64)
    out = rel(q)
    assert out.shape == (2, 3, *hw, 9)
    for b in range(2):
        for h in range(3):
            ref = relpos_closed_form(q[b, h], rel.rel_height.detach(), rel.rel_width.detach(), mode)
            assert torch.allclose(out[b, h], ref, atol=1e-10), (mode, hw)


def test_relpos_modes_differ_off_the_diagonal():
    rel = RelPosEmb((5, 5), 4, 'official').double()
    cor = RelPosEmb((5, 5), 4, 'corrected').double()
    cor.load_state_dict(rel.state_dict())
    q = torch.randn(1, 1, 5, 5, 4, dtype=torch.float64)
    assert not torch.allclose(rel(q), cor(q))
    with pytest.raises(ValueError, match='relpos mode'):
        RelPosEmb((5, 5), 4, 'transposed')


# ---------------------------------------------------------------------------------------------------------
# the whole attention == a per-pixel loop over the spec's steps 1-7
# ---------------------------------------------------------------------------------------------------------
def attention_loop_reference(attn: DGMN2Attention, x, H, W):
    B, N, C = x.shape
    h, d = attn.num_heads, attn.head_dims
    qkv = x @ attn.qkv.weight.T + attn.qkv.bias
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    out = torch.zeros(B, N, C, dtype=x.dtype)
    for b in range(B):
        for j in range(h):
            sl = slice(j * d, (j + 1) * d)
            qm = q[b, :, sl].reshape(H, W, d)
            km = k[b, :, sl].reshape(H, W, d)
            vm = v[b, :, sl].reshape(H, W, d)
            off = x[b, :, sl] @ attn.walk.weight.T + attn.walk.bias  # (N, 18), shared over heads
            pos = relpos_closed_form(qm, attn.rel_pos.rel_height.detach(), attn.rel_pos.rel_width.detach(),
                                     attn.rel_pos.mode)
            for y in range(H):
                for xx in range(W):
                    n = y * W + xx
                    logits, vals = [], []
                    for t in range(9):
                        py = y - 1 + t // 3 + float(off[n, 2 * t])
                        px = xx - 1 + t % 3 + float(off[n, 2 * t + 1])
                        ks = torch.tensor([dcn_bilinear(km[..., c], py, px) for c in range(d)], dtype=x.dtype)
                        vs = torch.tensor([dcn_bilinear(vm[..., c], py, px) for c in range(d)], dtype=x.dtype)
                        logits.append(qm[y, xx] @ ks * d ** -0.5 + pos[y, xx, t])
                        vals.append(vs)
                    a = torch.softmax(torch.stack(logits), 0)
                    out[b, n, sl] = (a[:, None] * torch.stack(vals)).sum(0)
    return out @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize('mode,hw', [('official', (4, 4)), ('official', (3, 5)), ('corrected', (5, 3))])
def test_attention_equals_loop_reference(mode, hw):
    H, W = hw
    attn = DGMN2Attention(8, 2, (4, 4), relpos_mode=mode).double().eval()
    with torch.no_grad():
        attn.walk.weight.mul_(40)  # walks of several pixels, many of them leaving the map
    x = torch.randn(2, H * W, 8, dtype=torch.float64)
    with torch.no_grad():
        out = attn(x, hw)
        ref = attention_loop_reference(attn, x, H, W)
    assert torch.allclose(out, ref, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------
# shapes in every output mode, at 224x224 and at odd sizes
# ---------------------------------------------------------------------------------------------------------
def conv_out(n, s):
    return (n - 1) // s + 1


@pytest.mark.parametrize('hw', [(224, 224), (97, 131), (33, 33)])
@pytest.mark.parametrize('strides,out_indices', [((4, 2, 2, 2), (0, 1, 2, 3)),  # mmdet / Semantic FPN
                                                 ((4, 2, 1, 1), (3, )),  # SETR naive / PUP
                                                 ((4, 2, 1, 1), (0, 1, 2, 3)),  # SETR MLA
                                                 ((4, 2, 2, 2), (-1, ))])  # classification
def test_output_shapes(hw, strides, out_indices):
    model = DGMN2('tiny', strides=strides, out_indices=out_indices).eval()
    sizes, (h, w) = [], hw
    h, w = conv_out(conv_out(h, 2), 2), conv_out(conv_out(w, 2), 2)  # stem: s2, s1, s2
    sizes.append((h, w))
    for s in strides[1:]:
        h, w = conv_out(h, s), conv_out(w, s)
        sizes.append((h, w))
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert isinstance(outs, tuple)
    idx = [i % 4 for i in out_indices]
    assert [tuple(o.shape) for o in outs] == [(1, (64, 128, 320, 512)[i], *sizes[i]) for i in idx]
    assert all(torch.isfinite(o).all() for o in outs)


def test_classification_resolution_features_do_not_depend_on_batch():
    model = DGMN2(TINY_ARCH).eval()
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        full = model(x)
        single = model(x[1:2])
    for a, b in zip(full, single):
        assert torch.allclose(a[1:2], b, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# gradients, freezing, init, arguments
# ---------------------------------------------------------------------------------------------------------
def test_gradients_reach_walk_predictor_and_tables():
    model = DGMN2(TINY_ARCH).train()
    outs = model(torch.randn(2, 3, 40, 56))
    sum((o ** 2).mean() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        if '.attn.walk.' in name or 'rel_pos' in name:
            assert p.grad.abs().sum() > 0, name


def test_init_follows_spec():
    model = DGMN2('tiny')
    attn = model.stages[0].blocks[0].attn
    w = attn.walk.weight
    assert abs(w.std().item() - 0.02) < 0.004 and w.abs().max() <= 2 and (attn.walk.bias == 0).all()
    assert abs(attn.rel_pos.rel_width.std().item() - 64 ** -0.5) < 0.02
    assert (model.stages[0].blocks[0].norm1.weight == 1).all()
    assert attn.rel_pos.rel_height.shape == (64, 64) and model.stages[3].blocks[0].attn.rel_pos.rel_width.shape == (15, 64)


def test_frozen_stages_and_norm_eval():
    model = DGMN2(TINY_ARCH, frozen_stages=2, norm_eval=True).train()
    for i, stage in enumerate(model.stages):
        assert all(p.requires_grad == (i >= 2) for p in stage.parameters())
    assert not model.stages[0].patch_embed.norm1.training and not model.stages[3].patch_embed.norm.training
    model = DGMN2(TINY_ARCH, frozen_stages=1).train()
    assert not model.stages[0].patch_embed.norm1.training and model.stages[1].patch_embed.norm.training


def test_drop_path_is_linear_over_blocks():
    model = DGMN2('small', drop_path_rate=0.1)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages for b in s.blocks]
    assert rates[0] == 0 and abs(rates[-1] - 0.1) < 1e-7 and len(rates) == 16
    assert all(b > a for a, b in zip(rates, rates[1:]))


def test_with_cp_gives_same_gradients():
    torch.manual_seed(1)
    a = DGMN2(TINY_ARCH).train()
    b = DGMN2(TINY_ARCH, with_cp=True).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    for m in (a, b):
        sum(o.sum() for o in m(x)).backward()
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), n


@pytest.mark.parametrize('kwargs,err', [(dict(arch='huge'), "unknown DGMN2 arch"),
                                        (dict(arch=dict(depths=(1, 1, 1, 1))), 'missing'),
                                        (dict(strides=(4, 2, 3, 2)), 'strides'),
                                        (dict(strides=(2, 2, 2, 2)), 'strides'),
                                        (dict(out_indices=(4, )), 'out_indices'),
                                        (dict(attn_impl='cuda-only'), 'attn_impl')])
def test_bad_arguments_raise(kwargs, err):
    with pytest.raises(ValueError, match=err):
        DGMN2(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# registration: the three codebases and a config with custom_imports
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
def test_builds_from_every_scope(scope):
    import importlib
    registry = importlib.import_module(f'{scope}.registry').MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(dict(type='DGMN2', arch='tiny', out_indices=(1, 3)))
    assert isinstance(model, DGMN2) and model.out_indices == (1, 3)


def test_drop_path_schedule_hook_switches_stochastic_depth_on_at_start_epoch():
    from types import SimpleNamespace
    from mmengine.registry import HOOKS
    model = DGMN2(TINY_ARCH, drop_path_rate=0.3)
    hook = HOOKS.build(dict(type='DropPathScheduleHook', start_epoch=2))
    rates = lambda: [b.drop_path.drop_prob for s in model.stages for b in s.blocks[:] if hasattr(b.drop_path, 'drop_prob')]  # noqa
    configured = rates()
    assert len(configured) == 3 and max(configured) == pytest.approx(0.3)
    for epoch, expected in [(0, [0.] * 3), (1, [0.] * 3), (2, configured), (5, configured)]:
        hook.before_train_epoch(SimpleNamespace(model=model, epoch=epoch))
        assert rates() == expected
    resumed = HOOKS.build(dict(type='DropPathScheduleHook', start_epoch=2))  # a run resumed at epoch 3
    model2 = DGMN2(TINY_ARCH, drop_path_rate=0.3)
    resumed.before_train_epoch(SimpleNamespace(model=model2, epoch=3))
    assert [b.drop_path.drop_prob for s in model2.stages for b in s.blocks if hasattr(b.drop_path, 'drop_prob')] == configured


@pytest.mark.parametrize('impl', ['reference', 'fast'])
def test_block_inference_path_equals_the_autograd_path(monkeypatch, impl):
    """Eval + no_grad: in-place residuals and LN + FFN over token chunks (here 7 tokens, across the batch
    boundary) give the training-path sums; the input is left untouched."""
    from dgmn_mm.models.backbones.dgmn2 import DGMN2Block
    blk = DGMN2Block(16, 2, 4, (5, 5), attn_impl=impl).eval()
    x = torch.randn(2, 5 * 6, 16)
    x0 = x.clone()
    expected = blk._forward(x, (5, 6))  # autograd path (grad enabled)
    monkeypatch.setattr(DGMN2Block, 'chunk_tokens', 7)
    with torch.no_grad():
        got = blk(x, (5, 6))
    assert torch.equal(x, x0) and got.data_ptr() != x.data_ptr()
    assert got.shape == x.shape and torch.allclose(got, expected.detach(), atol=1e-6, rtol=0)
    with torch.no_grad():  # the first chunk alone, through the plain modules
        y = blk.attn(blk.norm1(x), (5, 6)) + x
        first = y[0, :7] + blk.ffn(blk.norm2(y[0, :7]))
    assert torch.equal(got[0, :7], first)


def test_patch_embeddings_are_channels_last_and_tokens_are_views():
    model = DGMN2(TINY_ARCH).eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    fresh = DGMN2(TINY_ARCH)
    fresh.load_state_dict(model.state_dict())  # loading keeps the layout
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last)
               for m in fresh.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        stage1 = model.stages[0](x)
        outs = model(x)
    assert stage1.is_contiguous(memory_format=torch.channels_last)  # between stages: no copies
    # the outputs are contiguous NCHW in both modes: ops such as mmcv's RoIAlign read raw NCHW memory
    # (channels-last outputs made a Mask R-CNN diverge)
    assert all(o.is_contiguous() for o in outs) and all(o.is_contiguous() for o in model.train()(x))
    from mmcv.ops import roi_align
    rois = torch.tensor([[0., 2., 3., 13., 11.], [1., 0., 0., 15., 7.]])
    expected = roi_align(outs[0].contiguous(memory_format=torch.channels_last).contiguous(), rois, (4, 4),
                         1., 2, 'avg', True)
    assert torch.equal(roi_align(outs[0], rois, (4, 4), 1., 2, 'avg', True), expected)

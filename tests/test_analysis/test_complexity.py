"""dgmn_mm.analysis.complexity: the paper's Table 6 and the DGMN2-specific counts."""
import pytest
import torch

import dgmn_mm  # noqa: F401
from dgmn_mm.analysis import (CATEGORIES, DEFAULT_SHAPES, FVCORE_OFFICIAL, PAPER_TABLE6, build_model, count_flops,
                              format_result, get_flops, input_shape, load_config)
from dgmn_mm.models.backbones.dgmn2 import DGMN2

# an ImageNet classifier as in configs/mmpretrain (written here so that this test does not depend on them)
CLS_CFG = """
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='DGMN2', arch='{arch}', out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=512,
              loss=dict(type='CrossEntropyLoss')))
"""


@pytest.fixture(scope='module')
def table6(tmp_path_factory):
    """get_flops on the four ImageNet classifiers at 224 x 224 (the expensive part, done once)."""
    out = {}
    for arch in ('tiny', 'small', 'medium', 'large'):
        cfg = tmp_path_factory.mktemp(arch) / f'dgmn2-{arch}_in1k.py'
        cfg.write_text(CLS_CFG.format(arch=arch))
        out[arch] = get_flops(str(cfg))
    return out


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['tiny', 'small', 'medium', 'large'])
def test_table6_within_5_percent(table6, arch):
    res = table6[arch]
    paper_params, paper_gflops = PAPER_TABLE6[arch]
    assert res['input_shape'] == (1, 3, 224, 224)
    assert abs(res['params'] / 1e6 - paper_params) / paper_params < 0.01
    # both totals reproduce Table 6 within 5 %
    for key in ('impl', 'paper'):
        assert abs(res[key] / 1e9 - paper_gflops) / paper_gflops < 0.05, (key, res[key])
    # the paper convention reproduces fvcore on the official code (2.32 / 4.29 / 7.24 / 10.54) within 0.5 %
    assert abs(res['paper'] / 1e9 - FVCORE_OFFICIAL[arch]) / FVCORE_OFFICIAL[arch] < 0.005


@pytest.mark.slow
def test_dgmn2_counts_are_analytic(table6):
    """The DGMN2-specific parts equal their closed forms (DGMN2-Tiny at 224: 2 blocks per stage)."""
    res = table6['tiny']
    assert res['impl'] == 2312822784 and res['params'] == 12101464
    cats = res['categories']
    K, d = 9, 64
    # (N, heads) per stage at 224: 56^2 / 28^2 / 14^2 / 7^2 tokens, 1 / 2 / 5 / 8 heads, 2 blocks each
    stages = [(56 * 56, 1, 56), (28 * 28, 2, 28), (14 * 14, 5, 14), (7 * 7, 8, 7)]
    blocks = 2
    ndh = sum(n * h * d for n, h, _ in stages) * blocks  # sum over blocks of N * heads * d
    assert cats['messages'] == 2 * K * ndh  # q.k_j and sum_j a_j v_j
    assert cats['relpos'] == 2 * K * ndh  # width and height terms, K rows each
    assert cats['sampling'] == 2 * 4 * K * ndh  # keys and values, 4 bilinear corners
    assert cats['walk'] == 2 * K * ndh  # Linear(d, 2K) per head
    # the official RelPos multiplies with all L = S + 8 rows of both tables
    official_relpos = sum(n * h * d * 2 * (s + K - 1) for n, h, s in stages) * blocks
    assert res['relpos_official_extra'] == official_relpos - cats['relpos']
    assert res['paper'] == res['impl'] - cats['sampling'] + res['relpos_official_extra']
    assert sum(cats.values()) == res['impl']
    # qkv + proj: 4 C^2 per token; FFN: 2 r C^2 per token
    widths, ratios = (64, 128, 320, 512), (8, 8, 4, 4)
    tokens = [n for n, _, _ in stages]
    assert cats['qkv_proj'] == sum(4 * c * c * n for c, n in zip(widths, tokens)) * blocks
    assert cats['ffn'] == sum(2 * r * c * c * n for c, r, n in zip(widths, ratios, tokens)) * blocks


@pytest.mark.slow
def test_attention_counts_match_the_closed_form_of_the_layer(table6):
    """The traced counts equal ``dgmn2_attention_flops`` (which counts 2 x MACs) summed over all blocks."""
    from dgmn_mm.models.layers.sampled_attention import dgmn2_attention_flops
    cats = table6['tiny']['categories']
    traced = sum(cats[k] for k in ('qkv_proj', 'walk', 'sampling', 'messages', 'relpos'))
    closed = sum(2 * dgmn2_attention_flops(s * s, c, h, s, s)
                 for s, c, h in ((56, 64, 1), (28, 128, 2), (14, 320, 5), (7, 512, 8)))
    assert 2 * traced == closed


def test_count_flops_on_a_bare_backbone_and_non_square_input():
    model = DGMN2(arch='tiny', strides=(4, 2, 1, 1)).eval()
    impl = model.stages[0].blocks[0].attn.attn_impl
    x = torch.randn(1, 3, 64, 96)
    res = count_flops(model, x)
    assert model.stages[0].blocks[0].attn.attn_impl == impl  # the fused path is restored after counting
    assert res['params'] == sum(p.numel() for p in model.parameters())
    cats = res['categories']
    assert cats['rest'] == 0 and cats['sampling'] == 4 * cats['messages'] > 0
    # stage maps 16x24, 8x12, 8x12, 8x12: RelPos and messages scale with the tokens of each stage
    K, d = 9, 64
    ndh = 2 * d * (16 * 24 * 1 + 8 * 12 * 2 + 8 * 12 * 5 + 8 * 12 * 8)
    assert cats['messages'] == 2 * K * ndh
    # RelPos: the same einsums, plus the small bilinear resizes of the tables (to W + 8 and H + 8 rows) and,
    # for H != W, the official resize of the height term from (W, H) to (H, W)
    assert 2 * K * ndh < cats['relpos'] < 1.1 * 2 * K * ndh


@pytest.mark.slow
def test_mmengine_counts_the_fused_attention_like_this_tool(tmp_path):
    """DGMN2-Tiny classifier at 224 with the default fused attention: mmengine's analyzer (as upstream
    get_flops tools call it) gives this counter's impl total, 2.31 G, thanks to the dgmn_mm:: operator handles."""
    from mmengine.analysis import get_model_complexity_info
    cfg = tmp_path / 'dgmn2-tiny_in1k.py'
    cfg.write_text(CLS_CFG.format(arch='tiny'))
    model = build_model(load_config(str(cfg)))
    x = torch.randn(1, 3, 224, 224)
    ours = count_flops(model, x, lambda t: model(t, mode='tensor'))['impl']
    info = get_model_complexity_info(model, inputs=(x, ), show_table=False, show_arch=False)
    assert info['flops'] == ours
    assert abs(ours / 1e9 - 2.313) < 0.001


def test_input_shape_defaults_and_errors():
    assert input_shape(None, 'detector') == DEFAULT_SHAPES['detector'] == (800, 1333)
    assert input_shape([96], 'classifier') == (96, 96) and input_shape((64, 80), 'segmentor') == (64, 80)
    with pytest.raises(ValueError, match='kind must be one of'):
        input_shape(None, 'tracker')
    with pytest.raises(ValueError, match='shape must be one or two positive sizes'):
        input_shape((64, 0), 'classifier')
    with pytest.raises(ValueError, match='shape must be one or two positive sizes'):
        input_shape((1, 2, 3), 'classifier')


def test_format_result_conventions():
    """The report's headline follows the convention; the breakdown lists every DGMN2 category."""
    model = DGMN2(arch='tiny', strides=(4, 2, 2, 2)).eval()
    res = count_flops(model, torch.randn(1, 3, 64, 64))
    text = format_result(res, 'paper', breakdown=True)
    assert f"FLOPs (paper, MACs): {res['paper'] / 1e9:.3f} G" in text
    assert all(label in text for label in CATEGORIES.values())
    assert 'By operator' not in format_result(res)
    with pytest.raises(ValueError, match="convention must be 'impl' or 'paper'"):
        format_result(res, 'fvcore')


@pytest.mark.slow
def test_library_needs_no_codebase():
    """dgmn_mm.analysis imports and counts a bare backbone with mmdet, mmseg and mmpretrain blocked."""
    import os
    import subprocess
    import sys
    code = '''
import sys
for name in ('mmdet', 'mmseg', 'mmpretrain'):
    sys.modules[name] = None  # import blocked: behaves as not installed
import torch
from dgmn_mm.analysis import count_flops, model_kind
from dgmn_mm.models.backbones.dgmn2 import DGMN2
model = DGMN2(arch='tiny', strides=(4, 2, 2, 2)).eval()
res = count_flops(model, torch.randn(1, 3, 32, 32))
print('KIND', model_kind(model), 'PARAMS', res['params'], 'POSITIVE', res['impl'] > 0)
'''
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, '-c', code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    params = sum(p.numel() for p in DGMN2(arch='tiny', strides=(4, 2, 2, 2)).parameters())
    assert f'KIND other PARAMS {params} POSITIVE True' in proc.stdout

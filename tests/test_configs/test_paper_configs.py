"""The downstream configs of the paper.

- every config in ``configs/`` builds, and the models of the paper's tables have the paper's parameter
  count (within 2 % for RetinaNet, Mask R-CNN and Semantic FPN, 5 % for Deformable DETR, Sparse R-CNN and
  SETR; the classifiers within 1 % of Table 6). One model is built per config and reused for all checks;
  no weights are loaded (``init_weights`` is not called).
- one training step and one predict on tiny inputs (64 x 64, DGMN2-Tiny, BN instead of SyncBN, fewer
  proposals), with the overrides given as ``--cfg-options``-style dotted keys, for one config of each kind.

``python tests/test_configs/test_paper_configs.py`` prints the model-zoo table (our params beside the paper's).
"""
import contextlib
import glob
import os
import os.path as osp
from unittest import mock

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import MODELS, init_default_scope

import dgmn_mm  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p.split(os.sep))

# the paper's parameter counts (M) and the allowed relative difference
_T6, _T7, _T8, _T9, _T10, _T11 = 'Table 6', 'Table 7', 'Table 8', 'Table 9', 'Table 10', 'Table 11'
SIZES = ('tiny', 'small', 'medium', 'large')
PAPER_PARAMS = {}
for _s, _p in zip(SIZES, (12.1, 21.0, 35.8, 48.3)):
    PAPER_PARAMS[f'mmpretrain/dgmn2/dgmn2-{_s}_8xb128_in1k.py'] = (_p, 0.01, _T6)
for _s, _p in zip(SIZES, (21.8, 30.7, 45.6, 57.9)):
    PAPER_PARAMS[f'mmdet/dgmn2/retinanet_dgmn2-{_s}_fpn_1x_coco.py'] = (_p, 0.02, _T7)
for _s, _p in zip(SIZES, (31.8, 40.6, 55.5, 67.9)):
    PAPER_PARAMS[f'mmdet/dgmn2/mask-rcnn_dgmn2-{_s}_fpn_1x_coco.py'] = (_p, 0.02, _T8)
for _s, _p in zip(SIZES[:3], (24.0, 32.9, 47.7)):
    PAPER_PARAMS[f'mmdet/dgmn2/deformable-detr_dgmn2-{_s}_8xb2-50e_coco.py'] = (_p, 0.05, _T9)
PAPER_PARAMS['mmdet/dgmn2/deformable-detr-refine-twostage_dgmn2-small_8xb2-50e_coco.py'] = (34.0, 0.05, _T9)
PAPER_PARAMS['mmdet/dgmn2/sparse-rcnn_dgmn2-small_fpn_300-proposals_crop-ms-480-800-3x_coco.py'] = (102.6, 0.05,
                                                                                                _T10)
for _head, _ps, _tol in (('fpn', (15.84, 24.71, 39.55, 52.02), 0.02),
                         ('setr-naive', (11.60, 20.47, 35.31, 47.78), 0.05),
                         ('setr-pup', (13.95, 22.82, 37.67, 50.14), 0.05),
                         ('setr-mla', (13.37, 22.24, 37.08, 49.56), 0.05)):
    for _s, _p in zip(SIZES, _ps):
        PAPER_PARAMS[f'mmseg/dgmn2/{_head}_dgmn2-{_s}_4xb2-40k_cityscapes-769x769.py'] = (_p, _tol, _T11)


def rel(path):
    return osp.relpath(path, osp.join(REPO, 'configs')).replace(os.sep, '/')


def load_cfg(path, options=None):
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build(cfg):
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    return MODELS.build(cfg.model)


@contextlib.contextmanager
def no_param_init():
    """Construction without the random initialisers (``torch.nn.init.*`` become no-ops).

    Building a 50-100M-parameter detector spends almost all its time drawing random numbers (about 12 s
    for RetinaNet + DGMN2-Large on this machine, 0.2 s without); the module tree, the parameter shapes
    and the count do not depend on them."""
    names = ('uniform_', 'normal_', 'trunc_normal_', 'kaiming_uniform_', 'kaiming_normal_',
             'xavier_uniform_', 'xavier_normal_', 'constant_', 'zeros_', 'ones_', 'orthogonal_')
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(torch.nn.init, name, lambda t, *args, **kwargs: t))
        yield


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def test_paper_table_covers_the_issue_configs():
    """Every paper config of the tables above exists."""
    have = {rel(p) for p in CONFIGS}
    missing = sorted(k for k in PAPER_PARAMS if not k.startswith('mmpretrain/') and k not in have)
    assert not missing, missing


@pytest.mark.parametrize('path', CONFIGS, ids=[rel(p) for p in CONFIGS])
def test_config_builds(path):
    """Every config in configs/ builds (one model per config, no weights loaded); the models of the
    paper's tables are DGMN2 models from the converted ImageNet weights with the paper's parameter count."""
    cfg = load_cfg(path)
    with no_param_init():
        model = build(cfg)  # no init_weights: nothing is loaded
    name = rel(path)
    if name not in PAPER_PARAMS:
        return
    backbone = cfg.model.backbone
    assert backbone.type == 'DGMN2'
    arch = backbone.arch
    assert f'dgmn2-{arch}_' in osp.basename(path)
    assert cfg.custom_imports.imports == ['dgmn_mm']
    if not name.startswith('mmpretrain/'):
        # downstream models start from the converted ImageNet weights of the same size
        assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'pretrained/dgmn2_{arch}_mm.pth')
    n = count_params(model) / 1e6
    paper, tol, table = PAPER_PARAMS[name]
    assert abs(n - paper) / paper <= tol, f'{name}: {n:.3f}M vs {paper}M ({table}), tol {tol:.0%}'


@pytest.mark.slow  # loads every SETR config with its upstream bases
def test_setr_stride8_mode():
    """SETR configs run the backbone in the stride-8 mode."""
    for path in CONFIGS:
        if '/setr-' in path.replace(os.sep, '/'):
            assert tuple(load_cfg(path).model.backbone.strides) == (4, 2, 1, 1)


def test_mla_neck():
    """MLA gets four equal-size maps."""
    neck = MODELS.build(dict(type='MultiLevelResize', ref_index=1))
    feats = (torch.randn(1, 64, 20, 24), torch.randn(1, 128, 10, 12), torch.randn(1, 320, 10, 12))
    outs = neck(feats)
    assert [o.shape[-2:] for o in outs] == [torch.Size((10, 12))] * 3
    # exact 2x downsampling is the 2 x 2 average
    torch.testing.assert_close(outs[0], torch.nn.functional.avg_pool2d(feats[0], 2))
    assert outs[1] is feats[1]
    assert count_params(neck) == 0


# --------------------------------------------------------------------------------------------------------
# one training step and one predict per kind, on tiny inputs
# --------------------------------------------------------------------------------------------------------
TINY = {
    'model.backbone.arch': 'tiny',
    'model.backbone.init_cfg': None,
    'model.backbone.norm_cfg': dict(type='BN', requires_grad=True),
    'model.backbone.drop_path_rate': 0.0,
}
SEG_TINY = {
    **TINY,
    'model.data_preprocessor.size': (64, 64),
    'model.decode_head.norm_cfg': dict(type='BN', requires_grad=True),
    'model.test_cfg': dict(mode='whole'),
}
SETR_TINY = {**SEG_TINY, 'model.decode_head.img_size': (64, 64)}  # the official heads resize to img_size
SMOKE = {
    'mmdet/dgmn2/retinanet_dgmn2-tiny_fpn_1x_coco.py': TINY,
    'mmdet/dgmn2/mask-rcnn_dgmn2-tiny_fpn_1x_coco.py': TINY,
    'mmdet/dgmn2/deformable-detr_dgmn2-tiny_8xb2-50e_coco.py': {
        **TINY, 'model.num_queries': 20, 'model.test_cfg.max_per_img': 10},
    'mmdet/dgmn2/sparse-rcnn_dgmn2-small_fpn_300-proposals_crop-ms-480-800-3x_coco.py': {
        **TINY, 'model.rpn_head.num_proposals': 20, 'model.test_cfg.rcnn.max_per_img': 20},
    'mmseg/dgmn2/fpn_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py': SEG_TINY,
    'mmseg/dgmn2/setr-pup_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py': SETR_TINY,
    'mmseg/dgmn2/setr-mla_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py': SETR_TINY,
}


def det_batch(with_mask):
    from mmdet.testing import demo_mm_inputs
    return demo_mm_inputs(batch_size=2, image_shapes=(3, 64, 64), num_items=[2, 3], num_classes=80,
                          with_mask=with_mask)


def seg_batch(num_classes=19, size=64):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8))
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, size, size)))
        s.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size)))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('name', sorted(SMOKE))
def test_train_step_and_predict_on_tiny_inputs(name):
    cfg = load_cfg(osp.join(REPO, 'configs', name), SMOKE[name])
    model = build(cfg)
    model.init_weights()  # random init of the heads; the backbone has init_cfg=None
    model.train()
    is_det = name.startswith('mmdet/')
    batch = det_batch(with_mask='mask-rcnn' in name) if is_det else seg_batch()
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-4))
    before = model.backbone.stages[0].blocks[0].attn.qkv.weight.detach().clone()
    log_vars = model.train_step(batch, optim)
    assert log_vars['loss'].isfinite() and log_vars['loss'] > 0
    assert not torch.equal(before, model.backbone.stages[0].blocks[0].attn.qkv.weight)  # backbone trained

    model.eval()
    with torch.no_grad():
        preds = model.test_step(det_batch(with_mask='mask-rcnn' in name) if is_det else seg_batch())
    assert len(preds) == 2
    if is_det:
        for p in preds:
            assert p.pred_instances.bboxes.shape[-1] == 4
            assert torch.isfinite(p.pred_instances.scores).all()
    else:
        for p in preds:
            assert p.pred_sem_seg.data.shape == (1, 64, 64)


# --------------------------------------------------------------------------------------------------------
# python tests/test_configs/test_paper_configs.py -> the params table of the README (model zoo)
# --------------------------------------------------------------------------------------------------------
def params_table():
    rows = ['| config | paper table | paper params (M) | ours (M) | diff | tolerance |',
            '|---|---|---:|---:|---:|---:|']
    for path in CONFIGS:
        name = rel(path)
        if name not in PAPER_PARAMS:
            continue
        paper, tol, table = PAPER_PARAMS[name]
        with no_param_init():
            n = count_params(build(load_cfg(path))) / 1e6
        rows.append(f'| `{name}` | {table} | {paper:.2f} | {n:.3f} | {100 * (n - paper) / paper:+.2f} % | '
                    f'{tol:.0%} |')
    return '\n'.join(rows)


if __name__ == '__main__':
    print(params_table())

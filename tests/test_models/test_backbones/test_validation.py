"""Validated arguments and input sizes (DGMN2, the shared arch helpers) and data checks before training."""
import json
import os.path as osp

import pytest
import torch

from dgmn_mm.models.backbones.dgmn2 import DGMN2
from dgmn_mm.models.utils import check_cfg, check_rate, normalize_out_indices, parse_arch
from dgmn_mm.models.utils.dgmn2_checks import dgmn2_min_train_size, dgmn2_stage_sizes

TINY = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 1, 1, 2), mlp_ratios=(2, 2, 2, 2))


# --- shared helpers ---------------------------------------------------------------------------------------
def test_normalize_out_indices():
    assert normalize_out_indices(-1, 4) == (3, )
    assert normalize_out_indices((3, 0, -3), 4) == (0, 1, 3)
    assert normalize_out_indices((3, 0, -3), 4, sort=False) == (3, 0, 1)
    for bad in ((4, ), (-5, ), (), (1, 1), (0.5, ), (True, )):
        with pytest.raises(ValueError, match=r'out_indices .*\[-4, 3\]|out_indices names a stage twice'):
            normalize_out_indices(bad, 4)
    with pytest.raises(TypeError, match='out_indices must be an int or a sequence'):
        normalize_out_indices('0', 4)


def test_parse_arch():
    zoo = {'t': dict(depths=(1, 2)), 'tiny': dict(depths=(1, 2))}
    assert parse_arch('TINY', zoo, ('depths', 'dims'), 2, defaults=dict(dims=(8, 16))) == dict(
        depths=(1, 2), dims=(8, 16))
    with pytest.raises(ValueError, match=r"unknown M arch 'huge'; choose from \['t', 'tiny'\]"):
        parse_arch('huge', zoo, ('depths', ), 2, model='M')
    with pytest.raises(ValueError, match=r"missing \['dims'\]"):
        parse_arch(dict(depths=(1, 1)), zoo, ('depths', 'dims'), 2)
    with pytest.raises(ValueError, match=r"arch\['depths'\] must have 2 values"):
        parse_arch(dict(depths=(1, 1, 1)), zoo, ('depths', ), 2)
    with pytest.raises(ValueError, match=r"arch\['depths'\] must hold integers >= 1"):
        parse_arch(dict(depths=(1, 0)), zoo, ('depths', ), 2, positive_int_keys=('depths', ))
    with pytest.raises(TypeError, match='arch must be a str'):
        parse_arch(3, zoo, ('depths', ), 2)
    assert check_rate('p', 0) == 0.0
    with pytest.raises(ValueError, match=r'p must be a number in \[0, 1\)'):
        check_rate('p', 1)
    with pytest.raises(TypeError, match="norm_cfg must be a dict with a 'type' key"):
        check_cfg('norm_cfg', dict(requires_grad=True))


# --- DGMN2 constructor ------------------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs, error, match', [
    (dict(arch='huge'), ValueError, r"arch: unknown DGMN2 arch 'huge'; choose from \[.*'tiny'"),
    (dict(arch=dict(depths=(1, 1, 1, 1))), ValueError, r"arch: the arch dict is missing \['embed_dims'"),
    (dict(arch={**TINY, 'depths': (1, 1, 1)}), ValueError, r"arch\['depths'\] must have 4 values"),
    (dict(arch={**TINY, 'num_heads': (3, 1, 1, 2)}), ValueError, r'embed_dims\[0\]=16 is not divisible by '
                                                                  r'num_heads\[0\]=3'),
    (dict(arch={**TINY, 'mlp_ratios': (2, 0, 2, 2)}), ValueError, r"arch\['mlp_ratios'\] must be positive"),
    (dict(in_channels=0), ValueError, r'in_channels must be an integer in \[1, inf\]'),
    (dict(strides=(4, 3, 2, 2)), ValueError, r'strides must be \(4, s2, s3, s4\) with s_i in \(1, 2\)'),
    (dict(strides=(2, 2, 2, 2)), ValueError, r'strides must be \(4, s2, s3, s4\)'),
    (dict(out_indices=(4, )), ValueError, r'out_indices must be ints in \[-4, 3\]'),
    (dict(frozen_stages=9), ValueError, r'frozen_stages must be an integer in \[-1, 4\], got 9'),
    (dict(frozen_stages=-3), ValueError, r'frozen_stages must be an integer in \[-1, 4\], got -3'),
    (dict(drop_rate=1.0), ValueError, r'drop_rate must be a number in \[0, 1\)'),
    (dict(attn_drop_rate=-0.1), ValueError, r'attn_drop_rate must be a number in \[0, 1\)'),
    (dict(drop_path_rate='0.1'), ValueError, r'drop_path_rate must be a number in \[0, 1\)'),
    (dict(norm_cfg='BN'), TypeError, r"norm_cfg must be a dict with a 'type' key"),
    (dict(act_cfg=None), TypeError, r"act_cfg must be a dict with a 'type' key"),
    (dict(relpos_mode='fixed'), ValueError, r"relpos_mode must be one of \('official', 'corrected'\)"),
    (dict(attn_impl='cuda'), ValueError, r"attn_impl must be one of \(.*'fast'.*\), got 'cuda'"),
    (dict(pretrain_img_size=16), ValueError, r'pretrain_img_size must be an integer in \[32, inf\]'),
    (dict(norm_eval=1), TypeError, r'norm_eval must be True or False'),
    (dict(with_cp='yes'), TypeError, r'with_cp must be True or False'),
    (dict(qkv_bias=None), TypeError, r'qkv_bias must be True or False'),
])
def test_dgmn2_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        DGMN2(**{'arch': TINY, **kwargs})


@pytest.mark.parametrize('frozen', [-1, 0, 2, 4])
def test_dgmn2_frozen_stages_range(frozen):
    m = DGMN2(arch=TINY, frozen_stages=frozen)
    trainable = [any(p.requires_grad for p in stage.parameters()) for stage in m.stages]
    assert trainable == [i >= max(frozen, 0) for i in range(4)]
    assert DGMN2(arch='T', out_indices=-1).out_indices == (3, )


# --- DGMN2 input sizes ------------------------------------------------------------------------------------
def test_stage_size_arithmetic_matches_the_model():
    for strides in ((4, 2, 2, 2), (4, 2, 1, 1)):
        model = DGMN2(arch=TINY, strides=strides).eval()
        for size in (1, 5, 17, 33, 40):
            with torch.no_grad():
                outs = model(torch.randn(1, 3, size, size + 3))
            assert tuple(o.shape[2] for o in outs) == dgmn2_stage_sizes(size, strides)
            assert tuple(o.shape[3] for o in outs) == dgmn2_stage_sizes(size + 3, strides)
    assert dgmn2_min_train_size((4, 2, 2, 2), (0, 1, 2, 3)) == 33
    assert dgmn2_min_train_size((4, 2, 1, 1), (0, 1, 2, 3)) == 9


@pytest.mark.parametrize('strides, minimum', [((4, 2, 2, 2), 33), ((4, 2, 1, 1), 9)])
def test_dgmn2_too_small_in_training_names_the_minimum(strides, minimum):
    m = DGMN2(arch=TINY, strides=strides).train()
    with pytest.raises(ValueError, match=rf'A batch of 1 needs H or W >= {minimum} px'):
        m(torch.randn(1, 3, minimum - 1, minimum - 1))
    m(torch.randn(1, 3, minimum, 1))  # the minimum on one side is enough
    m(torch.randn(2, 3, 1, 1))  # a batch of 2 always has two values per channel
    # nothing in training mode: every size runs
    DGMN2(arch=TINY, strides=strides, norm_eval=True).train()(torch.randn(1, 3, 5, 5))
    DGMN2(arch=TINY, strides=strides, frozen_stages=4).train()(torch.randn(1, 3, 5, 5))
    # what the check replaces: BatchNorm's own error names no size
    with pytest.raises(ValueError, match='Expected more than 1 value per channel'):
        torch.nn.functional.batch_norm(torch.randn(1, 4, 1, 1), None, None, training=True)


def test_dgmn2_inference_any_size_and_bad_shapes():
    m = DGMN2(arch=TINY).eval()
    with torch.no_grad():
        assert [o.shape[-2:] for o in m(torch.randn(1, 3, 1, 1))] == [(1, 1)] * 4
        with pytest.raises(ValueError, match=r'expects an input of shape \(B, 3, H, W\), got \(1, 1, 8, 8\)'):
            m(torch.randn(1, 1, 8, 8))
        with pytest.raises(ValueError, match=r'expects an input of shape \(B, 3, H, W\)'):
            m(torch.randn(3, 8, 8))


# --- data checks before training ----------------------------------------------------------------------------
def _coco_cfg(root, **dataset):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))), 'tests', 'data', 'configs',
                                   'dgmn2_tiny_retinanet.py'))
    cfg.train_dataloader.dataset.data_root = str(root)
    cfg.train_dataloader.dataset.update(dataset)
    return cfg


def _write_coco(root, images=True, annotations=True):
    (root / 'img').mkdir(exist_ok=True)
    content = dict(images=[dict(id=1, file_name='a.png', width=8, height=8)] if images else [],
                   annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 4, 4], area=16, iscrowd=0)]
                   if annotations else [],
                   categories=[dict(id=1, name='thing')])
    (root / 'ann.json').write_text(json.dumps(content))


@pytest.mark.parametrize('case, error, match', [
    ('missing', FileNotFoundError, r"annotation file '.*ann\.json' does not exist"),
    ('empty_file', ValueError, r"annotation file '.*ann\.json' is empty \(0 bytes\)"),
    ('not_json', ValueError, r"annotation file '.*ann\.json' is not valid JSON: Expecting"),
    ('no_images', ValueError, r"annotation file '.*ann\.json' has no images \(\"images\" is empty\)"),
    ('no_annotations', ValueError, r"annotation file '.*ann\.json' has no annotations \(\"annotations\" is "
                                   r"empty\)"),
])
def test_bad_coco_annotation_files_are_named(tmp_path, case, error, match):
    from dgmn_mm.engine import check_data_cfg
    if case == 'empty_file':
        (tmp_path / 'ann.json').write_bytes(b'')
    elif case == 'not_json':
        (tmp_path / 'ann.json').write_text('{"images": [')
    elif case != 'missing':
        _write_coco(tmp_path, images=case != 'no_images', annotations=case != 'no_annotations')
    with pytest.raises(error, match=match):
        check_data_cfg(_coco_cfg(tmp_path))


def test_good_data_and_wrappers_pass(tmp_path):
    from dgmn_mm.engine import check_data_cfg
    _write_coco(tmp_path)
    cfg = _coco_cfg(tmp_path)
    assert len(check_data_cfg(cfg)) == 1
    # a wrapper (RepeatDataset) is walked into; the val set may lack annotations
    cfg.train_dataloader.dataset = dict(type='RepeatDataset', times=2, dataset=cfg.train_dataloader.dataset)
    assert len(check_data_cfg(cfg)) == 1
    _write_coco(tmp_path, annotations=False)
    cfg.val_dataloader = dict(dataset=cfg.train_dataloader.dataset.dataset)
    assert len(check_data_cfg(cfg, splits=('val', ))) == 1
    with pytest.raises(ValueError, match='has no annotations'):
        check_data_cfg(cfg, splits=('train', ))


def test_folder_datasets(tmp_path):
    from dgmn_mm.engine import check_data_cfg
    from mmengine.config import Config
    cfg = Config(dict(train_dataloader=dict(dataset=dict(
        type='BaseSegDataset', data_root=str(tmp_path), data_prefix=dict(img_path='img', seg_map_path='ann')))))
    with pytest.raises(FileNotFoundError, match=r"image folder '.*img' does not exist"):
        check_data_cfg(cfg)
    (tmp_path / 'img').mkdir()
    with pytest.raises(ValueError, match=r"image folder '.*img' holds no files: the set has no images"):
        check_data_cfg(cfg)
    (tmp_path / 'img' / 'a.png').write_bytes(b'x')
    assert check_data_cfg(cfg)
    (tmp_path / 'list.txt').write_text('\n \n')
    cfg.train_dataloader.dataset.ann_file = 'list.txt'
    with pytest.raises(ValueError, match=r"list\.txt' lists no images"):
        check_data_cfg(cfg)


@pytest.mark.slow  # tools/train.py in a subprocess
def test_train_tool_names_the_empty_annotation_file(tmp_path):
    """End to end: tools/train.py stops before building anything, naming the 0-byte file."""
    import subprocess
    import sys
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    (tmp_path / 'ann.json').write_bytes(b'')
    proc = subprocess.run(
        [sys.executable, osp.join(root, 'tools', 'train.py'), osp.join(root, 'tests', 'data', 'configs',
                                                                       'dgmn2_tiny_retinanet.py'),
         '--work-dir', str(tmp_path / 'work'), '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path}'],
        capture_output=True, text=True, timeout=600, env={**__import__('os').environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode != 0
    assert f"annotation file '{tmp_path}/ann.json' is empty (0 bytes)" in proc.stderr
    assert 'JSONDecodeError' not in proc.stderr


def test_dit_uses_the_shared_helpers():
    from dgmn_mm.models.backbones.dit import DiT
    tiny = dict(depths=(1, 0, 1, 1), embed_dims=(8, 16, 16, 16), num_heads=(1, 1, 2, 2), sr_ratios=(4, 2, 1, 1),
                mlp_ratios=(1, 1, 1, 1))
    assert DiT(arch=tiny, out_indices=(3, -4)).out_indices == (3, 0)  # DiT returns maps in the given order
    with pytest.raises(ValueError, match=r"arch: unknown DiT arch 'b9'; choose from \['b1', 'b2'"):
        DiT(arch='b9')
    with pytest.raises(ValueError, match=r"arch\['sr_ratios'\] must hold integers >= 1"):
        DiT(arch={**tiny, 'sr_ratios': (4, 2, 0, 1)})
    with pytest.raises(ValueError, match=r'out_indices names a stage twice'):
        DiT(arch=tiny, out_indices=(0, -4))

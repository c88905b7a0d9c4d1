"""Official DGMN2 checkpoints of every released kind -> dgmn_mm configs, strictly; bad files refused.

The official key names and shapes are fixtures generated from the official code and configs
(github:fudan-zvg/DGMN2 @ 7b51ee7, see ``tests/data/dgmn2_official/README.md``), never from our own model:
an "official" state dict is built from a fixture with random values, converted, and loaded with
``strict=True`` into the model of our config; values are then followed through the renames.
"""
import importlib.util
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from dgmn_mm.models.backbones.dgmn2 import DGMN2, convert_official_state_dict, convert_to_official_state_dict
from dgmn_mm.models.backbones.dgmn2_convert import (COCO_CATEGORY_IDS, CheckpointError, checkpoint_filter_fn,
                                                    convert_official_checkpoint, detect_kind)

from conftest import REPO_ROOT

DATA = osp.join(REPO_ROOT, 'tests', 'data', 'dgmn2_official')
CONVERTER = osp.join(REPO_ROOT, 'tools', 'model_converters', 'dgmn2_official_to_mm.py')
ARCHS = ['tiny', 'small', 'medium', 'large']

_spec = importlib.util.spec_from_file_location('dgmn2_official_to_mm', CONVERTER)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def fixture(name):
    with open(osp.join(DATA, f'{name}.json')) as f:
        return json.load(f)


def official_shapes(kind_fixture, arch):
    """Official key -> shape of a whole model: the backbone of ``arch`` (its ImageNet keys minus the
    classifier, under the code base's prefix) plus the necks and heads of ``kind_fixture``."""
    imagenet = fixture(f'imagenet_dgmn2_{arch}')['state_dict']
    if kind_fixture == 'imagenet':
        return imagenet
    heads = fixture(kind_fixture)
    shapes = {heads['backbone_prefix'] + k: v for k, v in imagenet.items() if not k.startswith('head.')}
    shapes.update(heads['state_dict'])
    return shapes


def fake_official(kind_fixture, arch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randint(0, 100, (), generator=g) if k.endswith('num_batches_tracked')
            else torch.randn(shape, generator=g) for k, shape in official_shapes(kind_fixture, arch).items()}


def build_model(config):
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', config))
    scope = config.split('/')[0]
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg.model)


def run_converter(*args):
    return subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True, timeout=300)


# --------------------------------------------------------------------------------------------------------
# the fixtures
# --------------------------------------------------------------------------------------------------------
def test_fixtures_are_the_official_models():
    tiny = fixture('imagenet_dgmn2_tiny')['state_dict']
    assert len(tiny) == 166 and tiny['head.weight'] == [1000, 512]
    assert tiny['block1.0.attn.conv_offset.weight'] == [18, 64]  # the walk predictor: 9 nodes x (dy, dx)
    detr = fixture('deformable_detr_dgmn2_tiny_heads')
    assert detr['backbone_prefix'] == 'backbone.0.'
    assert detr['state_dict']['class_embed.0.weight'] == [91, 256]  # DETR's COCO convention
    assert detr['state_dict']['input_proj.0.0.weight'] == [256, 128, 1, 1]  # stages 2-4 feed the transformer
    pup = fixture('mmseg_setr_pup_heads')['state_dict']
    assert pup['decode_head.conv_0.bias'] == [256] and 'decode_head.conv_3.weight' not in pup
    assert not any('norm' in k and 'syncbn' not in k for k in pup)  # no input LayerNorm
    assert set(fixture('mmseg_setr_naive_heads')['state_dict']) == {'decode_head.conv_seg.weight',
                                                                      'decode_head.conv_seg.bias'}


# --------------------------------------------------------------------------------------------------------
# every kind loads strictly into its config
# --------------------------------------------------------------------------------------------------------
KIND_CASES = [  # (fixture, arch, config, expected kind)
    ('imagenet', 'tiny', 'mmpretrain/dgmn2/dgmn2-tiny_8xb128_in1k.py', 'imagenet'),
    ('mmdet_retinanet_heads', 'tiny', 'mmdet/dgmn2/retinanet_dgmn2-tiny_fpn_1x_coco.py', 'mmdet'),
    ('mmdet_mask_rcnn_heads', 'tiny', 'mmdet/dgmn2/mask-rcnn_dgmn2-tiny_fpn_1x_coco.py', 'mmdet'),
    ('deformable_detr_dgmn2_tiny_heads', 'tiny', 'mmdet/dgmn2/deformable-detr_dgmn2-tiny_8xb2-50e_coco.py',
     'deformable_detr'),
    ('deformable_detr_refine_twostage_dgmn2_small_heads', 'small',
     'mmdet/dgmn2/deformable-detr-refine-twostage_dgmn2-small_8xb2-50e_coco.py', 'deformable_detr'),
    ('mmseg_fpn_heads', 'tiny', 'mmseg/dgmn2/fpn_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py', 'mmseg'),
    ('mmseg_setr_naive_heads', 'tiny', 'mmseg/dgmn2/setr-naive_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py', 'mmseg'),
    ('mmseg_setr_pup_heads', 'tiny', 'mmseg/dgmn2/setr-pup_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py', 'mmseg'),
    ('mmseg_setr_mla_heads', 'tiny', 'mmseg/dgmn2/setr-mla_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py', 'mmseg'),
]
if osp.exists(osp.join(DATA, 'sparse_rcnn_dgmn2_small_heads.json')):
    KIND_CASES.append(('sparse_rcnn_dgmn2_small_heads', 'small',
                       'mmdet/dgmn2/sparse-rcnn_dgmn2-small_fpn_300-proposals_crop-ms-480-800-3x_coco.py',
                       'sparse_rcnn'))


@pytest.mark.parametrize('case', KIND_CASES, ids=[c[0] for c in KIND_CASES])
def test_every_official_kind_loads_strictly_into_its_config(case, tmp_path):
    kind_fixture, arch, config, kind = case
    official = fake_official(kind_fixture, arch)
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'mm.pth')
    # each trainer's wrapping: DeiT / Deformable DETR / detectron2 'model', mmcv 'state_dict' + 'meta'
    wrapped = {'state_dict': official, 'meta': {'epoch': 12, 'CLASSES': ('a', 'b')}} \
        if kind in ('mmdet', 'mmseg') else {'model': official, 'epoch': 49}
    torch.save(wrapped, src)
    info = tool.convert(src, dst, config=osp.join(REPO_ROOT, 'configs', config))
    assert info['kind'] == kind and info['arch'] == arch
    model = build_model(config)
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    model.load_state_dict(ckpt['state_dict'], strict=True)
    own = model.state_dict()
    # a backbone tensor follows the rename
    prefix = {'imagenet': '', 'mmdet': 'backbone.', 'mmseg': 'backbone.', 'deformable_detr': 'backbone.0.',
              'sparse_rcnn': 'backbone.bottom_up.'}[kind]
    assert torch.equal(own['backbone.stages.0.blocks.1.attn.walk.weight'],
                       official[prefix + 'block1.1.attn.conv_offset.weight'])
    # the heads: upstream / official-style modules keep their names and values
    same = [k for k in official if not k.startswith(prefix) and k in own]
    if kind in ('mmdet', 'mmseg'):
        assert len(same) == len(official) - sum(k.startswith(prefix) for k in official)
    for k in same:
        assert torch.equal(own[k], official[k]), k


def test_deformable_detr_table():
    official = fake_official('deformable_detr_refine_twostage_dgmn2_small_heads', 'small', seed=1)
    kind, ours = convert_official_checkpoint(official)
    assert kind == 'deformable_detr'
    # decoder norms: official norm2 follows self-attention (runs first), norm1 cross-attention, norm3 the FFN
    for off, mm in (('norm2', 0), ('norm1', 1), ('norm3', 2)):
        assert torch.equal(ours[f'decoder.layers.3.norms.{mm}.weight'],
                           official[f'transformer.decoder.layers.3.{off}.weight'])
    assert torch.equal(ours['decoder.layers.0.self_attn.attn.in_proj_weight'],
                       official['transformer.decoder.layers.0.self_attn.in_proj_weight'])
    assert torch.equal(ours['encoder.layers.5.ffn.layers.0.0.weight'],
                       official['transformer.encoder.layers.5.linear1.weight'])
    assert torch.equal(ours['bbox_head.reg_branches.2.4.bias'], official['bbox_embed.2.layers.2.bias'])
    assert torch.equal(ours['memory_trans_fc.weight'], official['transformer.enc_output.weight'])
    assert torch.equal(ours['neck.extra_convs.0.gn.bias'], official['input_proj.3.1.bias'])
    # 91 -> 80 logits: mmdet label i is COCO category COCO_CATEGORY_IDS[i] (person = 1, toothbrush = 90)
    assert len(COCO_CATEGORY_IDS) == 80 and len(set(COCO_CATEGORY_IDS)) == 80
    w = official['class_embed.2.weight']
    assert ours['bbox_head.cls_branches.2.weight'].shape == (80, 256)
    assert torch.equal(ours['bbox_head.cls_branches.2.weight'][0], w[1])
    assert torch.equal(ours['bbox_head.cls_branches.2.weight'][79], w[90])
    assert torch.equal(ours['bbox_head.cls_branches.2.bias'][11], official['class_embed.2.bias'][13])
    # the two-stage proposal branch (the last one) scores objectness with logit 0 in both code bases
    assert torch.equal(ours['bbox_head.cls_branches.6.weight'][0], official['class_embed.6.weight'][0])
    assert torch.equal(ours['bbox_head.cls_branches.6.weight'][1], official['class_embed.6.weight'][2])
    # the decoder's aliases of the prediction heads are not kept twice
    assert not any(k.startswith('transformer.') for k in ours)


@pytest.mark.parametrize('arch', ARCHS)
def test_every_official_imagenet_key_maps_to_one_of_ours(arch):
    shapes = official_shapes('imagenet', arch)
    converted = convert_official_state_dict({k: torch.empty(v) for k, v in shapes.items()})
    assert len(converted) == len(shapes)  # one to one
    own = {f'backbone.{k}': tuple(v.shape) for k, v in DGMN2(arch).state_dict().items()}
    own.update({'head.fc.weight': (1000, 512), 'head.fc.bias': (1000, )})
    assert {k: tuple(v.shape) for k, v in converted.items()} == own
    assert set(convert_to_official_state_dict(converted)) == set(shapes)


@pytest.mark.slow  # the converter CLI in a subprocess
def test_cli_converts_and_the_backbone_init_takes_official_files_of_any_kind(tmp_path):
    from mmengine.registry import MODELS
    official = fake_official('imagenet', 'tiny', seed=3)
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'mm.pth')
    torch.save({'model': official, 'args': __import__('argparse').Namespace(lr=1e-3)}, src)  # DeiT trainer
    res = run_converter(src, dst)
    assert res.returncode == 0, res.stderr
    assert 'imagenet DGMN2-tiny' in res.stdout
    detr = fake_official('deformable_detr_dgmn2_tiny_heads', 'tiny', seed=4)
    torch.save({'model': detr}, tmp_path / 'detr.pth')
    for path, ref in ((src, official), (dst, official), (str(tmp_path / 'detr.pth'),
                                                        {k[len('backbone.0.'):]: v for k, v in detr.items()})):
        backbone = MODELS.build(dict(type='DGMN2', arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=path)))
        backbone.init_weights()
        assert torch.equal(backbone.stages[2].blocks[1].ffn.fc2.bias, ref['block3.1.mlp.fc2.bias'])
        assert torch.equal(backbone.stages[0].patch_embed.norm3.running_var, ref['patch_embed1.norm3.running_var'])


# --------------------------------------------------------------------------------------------------------
# bad files: one line 'error: <file>: <what>', exit 2, nothing written; the init raises CheckpointError
# --------------------------------------------------------------------------------------------------------
class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def bad_files(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'model': fake_official('imagenet', 'small')}, good)
    files = {}
    files['garbage'] = tmp_path / 'garbage.pth'
    files['garbage'].write_bytes(b'\x00not a checkpoint\xff' * 50)
    files['truncated'] = tmp_path / 'truncated.pth'
    files['truncated'].write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    files['foreign'] = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(1000, 2048),
                               'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1)}}, files['foreign'])
    files['malicious'] = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'x': torch.zeros(1)}, 'meta': _Exploit(tmp_path / 'pwned')}, files['malicious'])
    files['empty'] = tmp_path / 'empty.pth'
    files['empty'].write_bytes(b'')
    files['not_a_dict'] = tmp_path / 'list.pth'
    torch.save([torch.zeros(1)], files['not_a_dict'])
    return good, files


EXPECTED = {'garbage': 'not a readable PyTorch checkpoint', 'truncated': 'not a readable PyTorch checkpoint',
            'foreign': 'not an official DGMN2 checkpoint', 'malicious': 'refused: the file would call posix.system',
            'empty': 'is empty', 'not_a_dict': 'holds a list, not a state dict'}
INIT_EXPECTED = {**EXPECTED, 'foreign': 'holds no DGMN2 weights'}


def assert_nothing_written(directory, before):
    assert sorted(os.listdir(directory)) == before


@pytest.mark.slow  # the converter CLI in nine subprocesses
def test_converter_refuses_bad_files_with_one_line(tmp_path):
    good, files = bad_files(tmp_path)
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    for name, path in files.items():
        res = run_converter(str(path), str(out_dir / 'mm.pth'))
        assert res.returncode == 2, (name, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert lines == [lines[0]] and lines[0].startswith(f'error: {path}: '), (name, res.stderr)
        assert EXPECTED[name] in lines[0], (name, lines[0])
        assert 'weights_only' not in res.stderr and 'Traceback' not in res.stderr
        assert os.listdir(out_dir) == []
    assert not (tmp_path / 'pwned').exists()  # the pickle's os.system never ran
    # wrong variant: Small weights where Tiny is asked for
    res = run_converter(str(good), str(out_dir / 'mm.pth'), '--arch', 'tiny')
    assert res.returncode == 2 and res.stderr.strip() == \
        f'error: {good}: holds DGMN2-small weights (3, 4, 6, 3), not DGMN2-tiny (2, 2, 2, 2)'
    # wrong variant for a config: Small weights, Tiny model
    res = run_converter(str(good), str(out_dir / 'mm.pth'), '--config',
                        osp.join(REPO_ROOT, 'configs', 'mmpretrain', 'dgmn2', 'dgmn2-tiny_8xb128_in1k.py'))
    assert res.returncode == 2 and 'does not fit the model of dgmn2-tiny_8xb128_in1k.py' in res.stderr
    assert os.listdir(out_dir) == []
    # bad DST: an existing directory; a path below a regular file
    res = run_converter(str(good), str(out_dir))
    assert res.returncode == 2 and res.stderr.strip() == f'error: {out_dir}: is a directory; DST must be a file path'
    res = run_converter(str(good), str(good) + '/mm.pth')
    assert res.returncode == 2 and 'is not a writable directory' in res.stderr
    assert os.listdir(out_dir) == [] and sorted(p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')) == []


@pytest.mark.slow  # the converter CLI in two subprocesses
def test_converter_refuses_unknown_keys(tmp_path):
    official = fake_official('mmdet_retinanet_heads', 'tiny')
    official['backbone.block1.0.attn.extra.weight'] = torch.zeros(1)
    torch.save({'state_dict': official}, tmp_path / 'unknown.pth')
    res = run_converter(str(tmp_path / 'unknown.pth'), str(tmp_path / 'out.pth'))
    assert res.returncode == 2 and 'unexpected keys [backbone.stages.0.blocks.0.attn.extra.weight]' in res.stderr
    truncated = fake_official('imagenet', 'small')
    del truncated['patch_embed4.norm.bias']
    truncated['block2.0.attn.conv_offset.weight'] = torch.zeros(18, 32)  # wrong shape
    torch.save(truncated, tmp_path / 'trunc.pth')
    res = run_converter(str(tmp_path / 'trunc.pth'), str(tmp_path / 'out.pth'))
    assert res.returncode == 2 and 'backbone.stages.3.patch_embed.norm.bias' in res.stderr
    assert 'backbone.stages.1.blocks.0.attn.walk.weight (18, 32)' in res.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_backbone_init_refuses_bad_files_with_one_clear_exception(tmp_path):
    good, files = bad_files(tmp_path)
    for name, path in files.items():
        backbone = DGMN2('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        with pytest.raises(CheckpointError) as info:
            backbone.init_weights()
        msg = str(info.value)
        assert msg.startswith(f'{path}: ') and INIT_EXPECTED[name] in msg, (name, msg)
        assert 'weights_only' not in msg and '\n' not in msg
    assert not (tmp_path / 'pwned').exists()
    with pytest.raises(CheckpointError, match=r'holds DGMN2-small weights .* the model is DGMN2-tiny'):
        DGMN2('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(good))).init_weights()
    missing = tmp_path / 'nope.pth'
    with pytest.raises(CheckpointError, match=f'{missing}: no such file'):
        DGMN2('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(missing))).init_weights()


def test_backbone_init_names_the_keys_that_do_not_fit(tmp_path):
    sd = DGMN2('tiny').state_dict()
    del sd['stages.1.blocks.0.attn.qkv.bias']
    sd['stages.9.blocks.0.foo'] = torch.zeros(1)
    torch.save(sd, tmp_path / 'bad.pth')
    backbone = DGMN2('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'bad.pth')))
    with pytest.raises(CheckpointError, match=r'stages\.1\.blocks\.0\.attn\.qkv\.bias.*stages\.9\.blocks\.0\.foo'):
        backbone.init_weights()


def test_detect_kind_and_filter():
    assert detect_kind({'patch_embed1.conv1.weight': torch.zeros(1)}) == 'imagenet'
    assert detect_kind({'backbone.block1.0.norm1.weight': torch.zeros(1), 'decode_head.conv_seg.weight': 0}) == 'mmseg'
    assert detect_kind({'backbone.block1.0.norm1.weight': torch.zeros(1), 'roi_head.x': 0}) == 'mmdet'
    assert detect_kind({'backbone.0.block1.0.norm1.weight': torch.zeros(1)}) == 'deformable_detr'
    assert detect_kind({'conv1.weight': torch.zeros(1)}) is None
    with pytest.raises(CheckpointError, match='x.pth: holds no state dict'):
        checkpoint_filter_fn({'model': {}}, source='x.pth')


def test_relpos_tables_are_resized_for_another_pretraining_size(tmp_path):
    arch = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 1, 1, 1), mlp_ratios=(1, 1, 1, 1))
    torch.save(DGMN2(arch).state_dict(), tmp_path / 'a.pth')
    model = DGMN2(arch, pretrain_img_size=384, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'a.pth')))
    model.init_weights()
    assert model.stages[0].blocks[0].attn.rel_pos.rel_width.shape == (96 + 8, 16)


def test_pickled_exploit_is_a_real_exploit(tmp_path):
    """The malicious fixture does run code when loaded without weights_only (so refusing it means something)."""
    marker = tmp_path / 'ran'
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()


def test_loading_a_file_keeps_the_process_allow_list(tmp_path):
    """Reading a checkpoint must not drop the allow-list that ``import dgmn_mm`` registered (torch's
    ``safe_globals`` context removes its entries on exit, also those registered before it)."""
    from dgmn_mm.models.backbones.dgmn2_convert import load_checkpoint_file
    before = set(torch.serialization.get_safe_globals())
    assert before, 'import dgmn_mm registers the mmengine/numpy allow-list'
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': {'w': torch.zeros(2)}}, path)
    load_checkpoint_file(str(path))
    assert set(torch.serialization.get_safe_globals()) == before

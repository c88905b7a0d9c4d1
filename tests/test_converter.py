"""Official DGMN2 checkpoints -> dgmn_mm: every key maps one to one, loads strictly into the ImageNet
config's model and into detection/segmentation backbones; foreign or truncated files are refused."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from dgmn_mm.models.backbones.dgmn2 import DGMN2, convert_official_state_dict, convert_to_official_state_dict

from conftest import REPO_ROOT

SPECS = osp.join(osp.dirname(REPO_ROOT), 'shared', 'specs', 'official_state_dicts')
CONVERTER = osp.join(REPO_ROOT, 'tools', 'model_converters', 'dgmn2_official_to_mm.py')
ARCHS = ['tiny', 'small', 'medium', 'large']


def official_shapes(arch):
    path = osp.join(SPECS, f'dgmn2_{arch}.json')
    if not osp.exists(path):
        pytest.skip(f'{path} is not available')
    with open(path) as f:
        return json.load(f)


def fake_official(arch, seed=0):
    """An official-format state dict with the official keys and shapes and random values."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, shape in official_shapes(arch).items():
        sd[k] = torch.randint(0, 100, (), generator=g) if k.endswith('num_batches_tracked') \
            else torch.randn(shape, generator=g)
    return sd


def run_converter(*args):
    return subprocess.run([sys.executable, CONVERTER, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize('arch', ARCHS)
def test_every_official_key_maps_to_one_of_ours(arch):
    shapes = official_shapes(arch)
    converted = convert_official_state_dict({k: torch.empty(v) for k, v in shapes.items()})
    assert len(converted) == len(shapes)  # one to one
    own = {f'backbone.{k}': tuple(v.shape) for k, v in DGMN2(arch).state_dict().items()}
    own.update({'head.fc.weight': (1000, 512), 'head.fc.bias': (1000, )})
    assert {k: tuple(v.shape) for k, v in converted.items()} == own
    assert set(convert_to_official_state_dict(converted)) == set(shapes)


@pytest.mark.parametrize('arch', ['tiny', 'large'])
def test_converted_checkpoint_loads_strictly_into_the_imagenet_config(arch, tmp_path):
    from mmpretrain.registry import MODELS
    from mmengine.registry import DefaultScope
    official = fake_official(arch)
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'mm.pth')
    torch.save({'model': official, 'epoch': 299}, src)  # the official trainer wraps it in 'model'
    res = run_converter(src, dst)
    assert res.returncode == 0, res.stderr
    assert f'DGMN2-{arch}' in res.stdout
    cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'mmpretrain', 'dgmn2', f'dgmn2-{arch}_8xb128_in1k.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    model.load_state_dict(ckpt['state_dict'], strict=True)
    # values survive: the official tensor equals ours, and the round trip is the identity
    assert torch.equal(model.backbone.stages[0].blocks[0].attn.walk.weight, official['block1.0.attn.conv_offset.weight'])
    assert torch.equal(model.head.fc.weight, official['head.weight'])
    back = convert_to_official_state_dict(ckpt['state_dict'])
    assert back.keys() == official.keys() and all(torch.equal(back[k], official[k]) for k in official)


def test_converted_and_official_files_load_into_a_detection_backbone(tmp_path):
    from mmdet.registry import MODELS
    official = fake_official('tiny', seed=3)
    src, dst = str(tmp_path / 'official.pth'), str(tmp_path / 'mm.pth')
    torch.save(official, src)  # a bare state dict
    assert run_converter(src, dst).returncode == 0
    for path in (src, dst):
        backbone = MODELS.build(dict(type='DGMN2', arch='tiny', init_cfg=dict(type='Pretrained', checkpoint=path)))
        backbone.init_weights()
        assert torch.equal(backbone.stages[2].blocks[1].ffn.fc2.bias, official['block3.1.mlp.fc2.bias'])
        assert torch.equal(backbone.stages[0].patch_embed.norm3.running_var, official['patch_embed1.norm3.running_var'])
    # a detector checkpoint (backbone.* plus other modules) loads through the same init_cfg
    det = {'state_dict': {**{f'backbone.{k}': v for k, v in DGMN2('tiny').state_dict().items()},
                          'neck.lateral_convs.0.conv.weight': torch.zeros(1)}}
    torch.save(det, tmp_path / 'det.pth')
    backbone = MODELS.build(dict(type='DGMN2', arch='tiny', strides=(4, 2, 1, 1),
                                 init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'det.pth'))))
    backbone.init_weights()


def test_foreign_and_truncated_checkpoints_are_refused(tmp_path):
    foreign = {'conv1.weight': torch.zeros(64, 3, 7, 7), 'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1),
               'fc.weight': torch.zeros(1000, 2048)}
    torch.save({'state_dict': foreign}, tmp_path / 'resnet.pth')
    res = run_converter(str(tmp_path / 'resnet.pth'), str(tmp_path / 'out.pth'))
    assert res.returncode != 0 and 'not an official DGMN2 checkpoint' in res.stderr
    assert 'conv1.weight' in res.stderr and not (tmp_path / 'out.pth').exists()

    truncated = fake_official('small')
    for k in [k for k in truncated if k.startswith('block3.5.')] + ['patch_embed4.norm.bias']:
        del truncated[k]
    truncated['block2.0.attn.conv_offset.weight'] = torch.zeros(18, 32)  # wrong shape
    torch.save(truncated, tmp_path / 'trunc.pth')
    res = run_converter(str(tmp_path / 'trunc.pth'), str(tmp_path / 'out.pth'), '--arch', 'small')
    assert res.returncode != 0
    assert 'backbone.stages.3.patch_embed.norm.bias' in res.stderr
    assert 'backbone.stages.2.blocks.5.attn.qkv.weight' in res.stderr
    assert 'backbone.stages.1.blocks.0.attn.walk.weight' in res.stderr and not (tmp_path / 'out.pth').exists()

    unknown = fake_official('tiny')
    unknown['block1.0.attn.extra.weight'] = torch.zeros(1)
    unknown['cls_token'] = torch.zeros(1)
    torch.save(unknown, tmp_path / 'unknown.pth')
    res = run_converter(str(tmp_path / 'unknown.pth'), str(tmp_path / 'out.pth'))
    assert res.returncode != 0 and 'cls_token' in res.stderr and 'block1.0.attn.extra.weight' in res.stderr


def test_backbone_pretrained_init_names_the_keys_that_do_not_fit(tmp_path):
    sd = DGMN2('tiny').state_dict()
    del sd['stages.1.blocks.0.attn.qkv.bias']
    sd['stages.9.blocks.0.foo'] = torch.zeros(1)
    torch.save(sd, tmp_path / 'bad.pth')
    backbone = DGMN2('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'bad.pth')))
    with pytest.raises(KeyError, match=r'stages\.1\.blocks\.0\.attn\.qkv\.bias.*stages\.9\.blocks\.0\.foo'):
        backbone.init_weights()
    # a small backbone refuses a tiny checkpoint instead of loading a part of it
    torch.save(DGMN2('tiny').state_dict(), tmp_path / 'tiny.pth')
    with pytest.raises(KeyError, match='missing'):
        DGMN2('small', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'tiny.pth'))).init_weights()


def test_relpos_tables_are_resized_for_another_pretraining_size(tmp_path):
    torch.save(DGMN2(dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 1, 1, 1),
                          mlp_ratios=(1, 1, 1, 1))).state_dict(), tmp_path / 'a.pth')
    model = DGMN2(dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 1, 1, 1),
                       mlp_ratios=(1, 1, 1, 1)), pretrain_img_size=384,
                  init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'a.pth')))
    model.init_weights()
    assert model.stages[0].blocks[0].attn.rel_pos.rel_width.shape == (96 + 8, 16)

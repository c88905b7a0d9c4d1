"""Official DGMN2 key/shape fixtures, from the official code (github:fudan-zvg/DGMN2 @ 7b51ee7)."""
import sys, json, types, importlib, os
HERE = os.path.dirname(os.path.abspath(__file__))
OFFICIAL = os.environ.get('DGMN2_OFFICIAL', '/tmp/dgmn2_official')  # `git archive` of the official repo
sys.path.insert(0, HERE); import stubs; stubs.install()
import torch
OUT = HERE
os.makedirs(OUT, exist_ok=True)
def shapes(sd): return {k: list(v.shape) for k, v in sd.items()}
def dump(name, obj):
    with open(f'{OUT}/{name}.json', 'w') as f:
        json.dump(obj, f, indent=0, separators=(',', ':'))
ARCHS = ['tiny', 'small', 'medium', 'large']
# ImageNet
sys.path.insert(0, OFFICIAL + '/classification')
import dgmn2 as cls
imagenet = {}
for a in ARCHS:
    imagenet[a] = shapes(getattr(cls, f'dgmn2_{a}')().state_dict())
    dump(f'imagenet_dgmn2_{a}', dict(source='classification/dgmn2.py dgmn2_' + a, state_dict=imagenet[a]))
backbone = {a: {k: v for k, v in imagenet[a].items() if not k.startswith('head.')} for a in ARCHS}
sys.path.pop(0)
for m in ['dgmn2', 'dgmn2_block']:
    sys.modules.pop(m, None)

# detection (mmdet 2.12) and segmentation (mmseg 0.16) backbones: same keys as ImageNet minus head
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
def load_pkg(pkgdir, pkgname, extra_stubs):
    saved = {n: sys.modules.get(n) for n in extra_stubs}
    for name, attrs in extra_stubs.items():
        mod = types.ModuleType(name); mod.__dict__.update(attrs); sys.modules[name] = mod
    sys.modules[f'{pkgname}.dcn'] = sys.modules['dcn']
    pkg = types.ModuleType(pkgname); pkg.__path__ = [pkgdir]; sys.modules[pkgname] = pkg
    out = importlib.import_module(f'{pkgname}.dgmn2')
    for n, m in saved.items():
        if m is None: sys.modules.pop(n)
        else: sys.modules[n] = m
    return out
class Reg:
    def register_module(self, *a, **k):
        return (lambda c: c) if not a else a[0]
reg = Reg()
det = load_pkg(OFFICIAL + '/detection/backbones', 'offdet', {
    'mmdet.models.builder': dict(BACKBONES=reg), 'mmdet.utils': dict(get_root_logger=lambda: None),
    'mmcv.runner': dict(load_checkpoint=None)})
for a in ARCHS:
    assert shapes(getattr(det, f'dgmn2_{a}')().state_dict()) == backbone[a], a
from mmcv.cnn import build_norm_layer
seg = load_pkg(OFFICIAL + '/segmentation/backbones', 'offseg', {
    'mmseg.models.builder': dict(BACKBONES=reg, HEADS=reg), 'mmseg.utils': dict(get_root_logger=lambda: None),
    'mmcv.runner': dict(load_checkpoint=None)})
for a in ARCHS:
    for out in ('decode_head', 'neck', 'decode_head_multi'):
        sd = shapes(getattr(seg, f'dgmn2_{a}')(norm_cfg=dict(type='BN'), output=out).state_dict())
        assert sd == backbone[a], (a, out)
# official SETR heads (segmentation/decode_heads), on mmseg's BaseDecodeHead (conv_seg + dropout, as in 0.16)
import mmseg.models.builder as _mb
_mb.HEADS = reg
import importlib.util
def load_file(path, name):
    spec = importlib.util.spec_from_file_location(name, path); mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod); return mod
up = load_file(OFFICIAL + '/segmentation/decode_heads/vit_up_head.py', 'off_vit_up_head')
mla = load_file(OFFICIAL + '/segmentation/decode_heads/vit_mla_head.py', 'off_vit_mla_head')
bn = dict(type='BN', requires_grad=True)
ce = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)
naive = up.VisionTransformerUpHead(in_channels=512, channels=512, in_index=0, img_size=769, embed_dim=512,
                                   num_classes=19, norm_cfg=bn, dropout_ratio=0, num_conv=2, align_corners=True,
                                   loss_decode=ce)
pup = up.VisionTransformerUpHead(in_channels=512, channels=256, in_index=0, img_size=769, embed_dim=512,
                                 num_classes=19, norm_cfg=bn, dropout_ratio=0, num_conv=4, align_corners=True,
                                 loss_decode=ce)
mlah = mla.VIT_MLAHead(in_channels=512, channels=512, img_size=769, mla_channels=[64, 128, 320, 512],
                       mlahead_channels=128, num_classes=19, dropout_ratio=0, norm_cfg=bn, align_corners=True,
                       loss_decode=ce)
def prefixed(p, m): return {p + k: v for k, v in shapes(m.state_dict()).items()}
for name, head, src in [('setr_naive', naive, 'segmentation/decode_heads/vit_up_head.py VisionTransformerUpHead num_conv=2'),
                        ('setr_pup', pup, 'segmentation/decode_heads/vit_up_head.py VisionTransformerUpHead num_conv=4'),
                        ('setr_mla', mlah, 'segmentation/decode_heads/vit_mla_head.py VIT_MLAHead')]:
    dump(f'mmseg_{name}_heads', dict(source=src, framework='mmseg 0.16', backbone_prefix='backbone.',
                                     state_dict=prefixed('decode_head.', head)))
# Deformable DETR
sys.modules['MultiScaleDeformableAttention'] = types.ModuleType('MultiScaleDeformableAttention')
sys.path.insert(0, OFFICIAL + '/deformable_detr')
sys.modules['models.dcn'] = sys.modules['dcn']
import main as detr_main
from models import build_model
for a, refine in [('tiny', False), ('small', False), ('medium', False), ('small', True)]:
    argv = ['--backbone', f'dgmn2_{a}', '--device', 'cpu'] + (['--with_box_refine', '--two_stage'] if refine else [])
    model, _, _ = build_model(detr_main.get_args_parser().parse_args(argv))
    sd = shapes(model.state_dict())
    bb = {k[len('backbone.0.'):]: v for k, v in sd.items() if k.startswith('backbone.0.')}
    assert bb == backbone[a], a
    rest = {k: v for k, v in sd.items() if not k.startswith('backbone.0.')}
    name = 'deformable_detr' + ('_refine_twostage' if refine else '')
    if a == 'tiny' or refine:
        dump(f'{name}_dgmn2_{a}_heads', dict(source='deformable_detr/main.py ' + ' '.join(argv), framework='Deformable DETR',
                                            backbone_prefix='backbone.0.', state_dict=rest))

# mmdet 2.12 RetinaNet / Mask R-CNN and mmseg 0.16 Semantic FPN: neck and heads are upstream modules whose
# parameter names did not change from mmdet 2.x / mmseg 0.x to mmdet 3.3 / mmseg 1.2 (both model zoos still
# serve their 2020 v2.0 / v0.5 checkpoints of these models unconverted), so their keys are generated by
# building the upstream modules from the official configs' fields.
sys.path[:] = [p for p in sys.path if 'deformable_detr' not in p]
for m in [m for m in sys.modules if m == 'models' or m.startswith(('models.', 'util'))]:
    sys.modules.pop(m)
from mmengine.config import Config
import mmdet.models, mmseg.models  # noqa: registers
from mmdet.registry import MODELS as DET
from mmseg.registry import MODELS as SEG
off = OFFICIAL
def build_parts(registry, cfg, parts):
    out = {}
    for p in parts:
        c = dict(cfg[p])
        if p == 'rpn_head':
            c.update(train_cfg=None, test_cfg=None)
        if p == 'roi_head':
            c.update(train_cfg=None, test_cfg=None)
        if p == 'bbox_head':
            c.update(train_cfg=None, test_cfg=None)
        out.update(prefixed(p + '.', registry.build(c)))
    return out
for name, parts, src in [('retinanet', ['neck', 'bbox_head'], 'detection/configs/retinanet_dgmn2_tiny_fpn_8x2_1x_coco.py'),
                         ('mask_rcnn', ['neck', 'rpn_head', 'roi_head'], 'detection/configs/mask_rcnn_dgmn2_tiny_fpn_8x2_1x_coco.py')]:
    cfg = Config.fromfile(f'{off}/{src}').model
    dump(f'mmdet_{name}_heads', dict(source=src, framework='mmdet 2.12', backbone_prefix='backbone.',
                                     state_dict=build_parts(DET, cfg, parts)))
src = 'segmentation/configs/fpn_dgmn2_tiny_4x2_769x769_40k_cityscapes.py'
cfg = Config.fromfile(f'{off}/{src}').model
cfg.decode_head.norm_cfg = bn
dump('mmseg_fpn_heads', dict(source=src, framework='mmseg 0.16', backbone_prefix='backbone.',
                             state_dict=build_parts(SEG, cfg, ['neck', 'decode_head'])))
print('ok')

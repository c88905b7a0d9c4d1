"""Official Sparse R-CNN + DGMN2-Small keys (sparsercnn/, detectron2) -> sparse_rcnn_dgmn2_small_heads.json.

detectron2 is not needed: its classes used at construction are stubbed (none holds parameters: Backbone is an
nn.Module base, ROIPooler / LastLevelMaxPool have no parameters); the FPN convs follow
sparsercnn/backbones/dgmn2_fpn.py (``fpn_lateral{stage}`` 1x1 and ``fpn_output{stage}`` 3x3, bias as NORM is '').
"""
import importlib, json, os, sys, types
HERE = os.path.dirname(os.path.abspath(__file__))
OFFICIAL = os.environ.get('DGMN2_OFFICIAL', '/tmp/dgmn2_official')
sys.path.insert(0, HERE); import stubs; stubs.install()
import torch.nn as nn
def mod(name, **attrs):
    m = types.ModuleType(name); m.__dict__.update(attrs); sys.modules[name] = m; return m
class Backbone(nn.Module):
    pass
class Reg:
    def register(self, *a, **k): return (lambda f: f) if not a else a[0]
mod('detectron2'); mod('detectron2.modeling'); mod('detectron2.modeling.backbone')
mod('detectron2.modeling.backbone.build', BACKBONE_REGISTRY=Reg())
mod('detectron2.modeling.backbone.backbone', Backbone=Backbone)
mod('detectron2.modeling.poolers', ROIPooler=None, cat=None)
mod('detectron2.structures', Boxes=None)
mod('detectron2.layers', ShapeSpec=None, Conv2d=None, get_norm=None)
pkg = types.ModuleType('offsparse'); pkg.__path__ = [OFFICIAL + '/sparsercnn/sparsercnn']; sys.modules['offsparse'] = pkg
bpkg = types.ModuleType('offsparse.backbones'); bpkg.__path__ = [OFFICIAL + '/sparsercnn/sparsercnn/backbones']
sys.modules['offsparse.backbones'] = bpkg
sys.modules['offsparse.backbones.dcn'] = sys.modules['dcn']
dg = importlib.import_module('offsparse.backbones.dgmn2')
head = importlib.import_module('offsparse.head')
with open(os.path.join(HERE, 'imagenet_dgmn2_small.json')) as f:
    imagenet = {k: v for k, v in json.load(f)['state_dict'].items() if not k.startswith('head.')}
N = lambda **k: types.SimpleNamespace(**k)
cfg = N(MODEL=N(SparseRCNN=N(NUM_CLASSES=80, HIDDEN_DIM=256, DIM_FEEDFORWARD=2048, NHEADS=8, DROPOUT=0.0,
                              ACTIVATION='relu', NUM_HEADS=6, DEEP_SUPERVISION=True, USE_FOCAL=True, PRIOR_PROB=0.01,
                              NUM_CLS=1, NUM_REG=3, NUM_DYNAMIC=2, DIM_DYNAMIC=64),
                ROI_BOX_HEAD=N(POOLER_RESOLUTION=7)))
head.DynamicHead._init_box_pooler = staticmethod(lambda cfg, shape: None)
dyn = head.DynamicHead(cfg, None)
sd = {'backbone.bottom_up.' + k: v for k, v in imagenet.items()}
for stage, c in zip(range(2, 6), (64, 128, 320, 512)):  # dgmn2_fpn.py: one lateral and one output conv per level
    sd.update({f'backbone.fpn_lateral{stage}.weight': [256, c, 1, 1], f'backbone.fpn_lateral{stage}.bias': [256],
               f'backbone.fpn_output{stage}.weight': [256, 256, 3, 3], f'backbone.fpn_output{stage}.bias': [256]})
sd['init_proposal_features.weight'] = [300, 256]  # detector.py: nn.Embedding(NUM_PROPOSALS, HIDDEN_DIM)
sd['init_proposal_boxes.weight'] = [300, 4]
sd.update({'head.' + k: list(v.shape) for k, v in dyn.state_dict().items()})
# the official backbone wrapper has exactly the ImageNet backbone keys
assert {k: list(v.shape) for k, v in dg.dgmn2_small().state_dict().items()} == imagenet
rest = {k: v for k, v in sd.items() if not k.startswith('backbone.bottom_up.')}
with open(os.path.join(HERE, 'sparse_rcnn_dgmn2_small_heads.json'), 'w') as f:
    json.dump(dict(source='sparsercnn/sparsercnn/{detector,head}.py, backbones/dgmn2_fpn.py with '
                          'sparsercnn.dgmn2small.300pro.3x.yaml', framework='Sparse R-CNN (detectron2)',
                   backbone_prefix='backbone.bottom_up.', state_dict=rest), f, indent=0, separators=(',', ':'))
print(len(rest), list(rest)[:12])

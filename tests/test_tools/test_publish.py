"""Published checkpoints: weights + plain meta, sha256 in the name, loadable with weights_only=True anywhere."""
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DET_DEMO = ROOT / 'configs/mmdet/demo/mask-rcnn_dgmn2-tiny_fpn_synthetic.py'
SEG_DEMO = ROOT / 'configs/mmseg/demo/fpn_dgmn2-tiny_synthetic.py'
CLS_DEMO = ROOT / 'configs/mmpretrain/demo/dgmn2-tiny_synthetic.py'


def runner_like_checkpoint(model, cfg_text, path, dataset_meta):
    """What mmengine's Runner.save_checkpoint writes: weights, meta with numpy scalars, optimizer, hub."""
    from mmengine.logging import MessageHub
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
    hub = MessageHub.get_instance('publish_test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_scalar('train/loss', np.float64(1.25))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.zero_grad()
    sum(p.sum() for p in model.parameters()).backward()
    opt.step()
    ckpt = dict(
        meta=dict(cfg=cfg_text, epoch=3, iter=np.int64(120), seed=np.int32(0), experiment_name='x',
                  dataset_meta=dataset_meta, hook_msgs=dict(best_score=np.float32(0.5)),
                  mmengine_version='0.10.7', lr=np.array([0.1, 0.2])),
        state_dict=weights_to_cpu(model.state_dict()),
        message_hub=hub.state_dict(),
        optimizer=opt.state_dict(),
        param_schedulers=[dict(last_epoch=3)])
    save_checkpoint(ckpt, str(path))
    return ckpt


def build(cfg_path):
    import dgmn_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    cfg = Config.fromfile(str(cfg_path))
    init_default_scope(cfg.default_scope)
    return cfg, MODELS.build(cfg.model)


def test_publish_keeps_weights_and_plain_meta(tmp_path):
    from dgmn_mm.apis import plain_meta, publish_checkpoint
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    src = tmp_path / 'epoch_3.pth'
    ckpt = runner_like_checkpoint(model, 'model = dict()', src, dict(classes=('a', 'b')))
    # the raw Runner checkpoint really needs the allow-list: weights_only loading refuses it
    with pytest.raises(Exception, match='(?i)weights only load failed|unsupported global'):
        _load_in_fresh_process(src)
    out = publish_checkpoint(str(src), str(tmp_path / 'pub' / 'model.pth'))
    assert re.fullmatch(r'model-[0-9a-f]{8}\.pth', os.path.basename(out))
    assert os.path.basename(out)[6:14] == hashlib.sha256(Path(out).read_bytes()).hexdigest()[:8]
    pub = torch.load(out, weights_only=True, map_location='cpu')
    assert set(pub) == {'state_dict', 'meta'}
    assert set(pub['state_dict']) == set(ckpt['state_dict'])
    for k, v in ckpt['state_dict'].items():
        assert torch.equal(pub['state_dict'][k], v)
    meta = pub['meta']
    assert meta['iter'] == 120 and type(meta['iter']) is int
    assert meta['hook_msgs'] == {'best_score': 0.5} and meta['lr'] == [0.1, 0.2]
    assert meta['dataset_meta'] == {'classes': ('a', 'b')} and meta['cfg'] == 'model = dict()'
    assert plain_meta({'a': object(), 'b': [1, object()], 3: 'x'}) == {'b': [1]}
    assert plain_meta(None) == {}
    with pytest.raises(TypeError, match='meta must be a dict'):
        plain_meta([1])


def _load_in_fresh_process(path):
    """torch.load(weights_only=True) in an interpreter without dgmn_mm's allow-list (this one has it)."""
    import pickle
    code = f'import torch; torch.load({str(path)!r}, weights_only=True, map_location="cpu")'
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    if res.returncode:
        raise pickle.UnpicklingError(res.stderr[-500:])


@pytest.mark.slow  # the publish CLI in a subprocess
def test_publish_tool_cli_and_bare_state_dict(tmp_path):
    src = tmp_path / 'sd.pth'
    torch.save({'w': torch.arange(3.)}, src)
    res = subprocess.run([sys.executable, str(ROOT / 'tools/model_converters/publish_model.py'), str(src),
                          str(tmp_path / 'bare.pth')], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r'bare-[0-9a-f]{8}\.pth', os.path.basename(out))
    pub = torch.load(out, weights_only=True)
    assert torch.equal(pub['state_dict']['w'], torch.arange(3.)) and pub['meta'] == {}
    torch.save({'w': torch.zeros(1), 'note': 'x'}, src)
    from dgmn_mm.apis import publish_checkpoint
    with pytest.raises(ValueError, match='no state_dict'):
        publish_checkpoint(str(src), str(tmp_path / 'bad.pth'))


INFER = r'''
import sys, torch
det, seg, seg_cfg, cls, cls_cfg, img = sys.argv[1:]
for path in (det, seg, cls):
    torch.load(path, weights_only=True, map_location='cpu')  # plain torch, dgmn_mm never imported
assert 'dgmn_mm' not in sys.modules
from mmdet.apis import DetInferencer
res = DetInferencer(model=None, weights=det, device='cpu', show_progress=False)(img, return_datasamples=True)
print('DET', len(res['predictions'][0].pred_instances), res['predictions'][0].ori_shape)
from mmseg.apis import MMSegInferencer
res = MMSegInferencer(model=seg_cfg, weights=seg, device='cpu')(img, return_datasamples=True)
print('SEG', tuple(res.pred_sem_seg.data.shape))
from mmpretrain.apis import ImageClassificationInferencer
from mmengine.registry import init_default_scope
init_default_scope('mmpretrain')  # three codebases in one process: the last inferencer left mmseg's scope
res = ImageClassificationInferencer(model=cls_cfg, pretrained=cls, device='cpu')(img)
print('CLS', res[0]['pred_class'])
'''


@pytest.mark.slow
def test_upstream_inferencers_run_from_published_files(tmp_path):
    """Published detector, segmentor and classifier files drive the upstream inferencers in a fresh process."""
    import matplotlib.cbook
    img = matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)
    from dgmn_mm.apis import publish_checkpoint
    paths = {}
    for name, cfg_path in (('det', DET_DEMO), ('seg', SEG_DEMO), ('cls', CLS_DEMO)):
        cfg, model = build(cfg_path)
        classes = cfg.get('classes', ('circle', 'square', 'star', 'triangle'))
        runner_like_checkpoint(model, cfg.pretty_text, tmp_path / f'{name}.pth', dict(classes=tuple(classes)))
        paths[name] = publish_checkpoint(str(tmp_path / f'{name}.pth'), str(tmp_path / f'{name}_pub.pth'))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    res = subprocess.run([sys.executable, '-c', INFER, paths['det'], paths['seg'], str(SEG_DEMO), paths['cls'],
                          str(CLS_DEMO), img], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    lines = {line.split()[0]: line for line in res.stdout.splitlines() if line.split()[:1] in (['DET'], ['SEG'],
                                                                                                  ['CLS'])}
    assert lines['DET'].endswith('(600, 512)')  # grace_hopper.jpg is 512 x 600 (w x h)
    assert lines['SEG'] == 'SEG (1, 600, 512)'
    assert lines['CLS'].split()[1] in ('circle', 'square', 'star', 'triangle')

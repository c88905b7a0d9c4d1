"""Packaging: the OpenMMLab codebases are extras, and ``import dgmn_mm`` works with any subset installed."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BLOCKED_IMPORT = r'''
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # import blocked: behaves as not installed
import torch
import dgmn_mm
from mmengine.registry import MODELS
model = MODELS.build(dict(type='DGMN2', arch='tiny', out_indices=(3, )))
out = model(torch.zeros(1, 3, 64, 64))
print('SHAPE', tuple(out[0].shape))
for name in {placeholders!r}:
    try:
        MODELS.build(dict(type=name))
    except ImportError as e:
        print('ERROR', name, e)
loaded = sorted({{k.split('.')[0] for k, v in sys.modules.items() if v is not None and
                 k.split('.')[0] in ('mmdet', 'mmseg', 'mmpretrain')}})
print('LOADED', ','.join(loaded))
'''


def run_blocked(blocked, placeholders):
    code = BLOCKED_IMPORT.format(blocked=tuple(blocked), placeholders=tuple(placeholders))
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    res = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout.splitlines()


def test_import_without_any_codebase():
    lines = run_blocked(['mmdet', 'mmseg', 'mmpretrain'],
                        ['DGMNHead', 'DiTRetinaNet', 'DiTMaskRCNN', 'DiTEncoderDecoder', 'DiTImageClassifier'])
    assert 'SHAPE (1, 512, 2, 2)' in lines
    errors = {line.split()[1]: line for line in lines if line.startswith('ERROR')}
    assert set(errors) == {'DGMNHead', 'DiTRetinaNet', 'DiTMaskRCNN', 'DiTEncoderDecoder',
                           'DiTImageClassifier'}
    assert 'pip install "dgmn_mm[mmseg]"' in errors['DGMNHead']
    assert 'pip install "dgmn_mm[mmdet]"' in errors['DiTRetinaNet']
    assert 'pip install "dgmn_mm[mmseg]"' in errors['DiTEncoderDecoder']
    assert 'pip install "dgmn_mm[mmpretrain]"' in errors['DiTImageClassifier']
    assert 'LOADED ' in lines  # none of the three was imported


def test_import_with_mmseg_only():
    lines = run_blocked(['mmdet', 'mmpretrain'], ['DiTRetinaNet'])
    assert 'SHAPE (1, 512, 2, 2)' in lines
    assert any(line.startswith('ERROR DiTRetinaNet') and 'dgmn_mm[mmdet]' in line for line in lines)
    assert 'LOADED ' in lines  # the DGMN head is registered lazily: mmseg is imported on its first build


def test_import_does_not_load_the_codebases():
    """With all three installed, ``import dgmn_mm`` imports none of mmdet, mmseg and mmpretrain's models
    (mmpretrain's model hub, ``mmpretrain.apis``, only learns the model index); the heads and DiT models are
    registered as factories (building one imports its codebase: ``test_real_classes_when_installed``)."""
    code = (
        'import sys, dgmn_mm\n'
        'from mmengine.registry import MODELS\n'
        'print("LOADED", sorted(k for k in sys.modules if k.split(".")[0] in ("mmdet", "mmseg") or '
        'k.startswith("mmpretrain.models")))\n'
        'print("FACTORIES", [MODELS.get(n).__name__ for n in ("DGMNHead", "OfficialSETRUpHead", "DiTRetinaNet")])\n')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    res = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert 'LOADED []' in lines, res.stdout
    assert "FACTORIES ['build_DGMNHead', 'build_OfficialSETRUpHead', 'build_DiTRetinaNet']" in lines, res.stdout


def test_real_classes_when_installed():
    pytest.importorskip('mmseg')
    import dgmn_mm  # noqa: F401
    from mmengine.registry import MODELS
    from mmseg.models.decode_heads import FCNHead

    from dgmn_mm.models.decode_heads import DGMNHead, OfficialSETRMLAHead, OfficialSETRUpHead
    assert issubclass(DGMNHead, FCNHead)
    # once the module is imported, the registry holds the classes themselves (they replace the factories)
    assert MODELS.get('DGMNHead') is DGMNHead
    assert MODELS.get('OfficialSETRUpHead') is OfficialSETRUpHead
    assert MODELS.get('OfficialSETRMLAHead') is OfficialSETRMLAHead
    head = MODELS.build(dict(type='DGMNHead', in_channels=8, channels=32, num_classes=3, dilations=(1, 2)))
    assert type(head) is DGMNHead


def test_register_lazy_factory_and_placeholder():
    from mmengine.registry import Registry

    from dgmn_mm.registry import register_lazy
    registry = Registry('lazy test')
    calls = []

    def load():
        calls.append(1)
        return dict

    register_lazy('LazyThing', 'mmseg', load, registry)
    assert calls == []  # nothing is loaded when registering
    assert registry.build(dict(type='LazyThing', a=1)) == {'a': 1} and calls == [1]
    with pytest.raises(ValueError, match='codebase must be one of'):
        register_lazy('Other', 'mmsegmentation', load, registry)


def test_codebase_available_rejects_unknown_names():
    from dgmn_mm.registry import codebase_available
    with pytest.raises(ValueError, match='codebase must be one of'):
        codebase_available('mmdetection')


def test_pyproject_extras_and_ranges():
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    deps = project['dependencies']
    assert not any(d.startswith(('mmdet', 'mmsegmentation', 'mmpretrain')) for d in deps)
    assert 'psutil' in deps
    assert not any('==' in d for d in deps)
    extras = project['optional-dependencies']
    assert {'mmdet', 'mmseg', 'mmpretrain', 'all', 'tests'} <= set(extras)
    assert extras['mmdet'][0].startswith('mmdet>=') and '<' in extras['mmdet'][0]
    assert extras['mmseg'][0].startswith('mmsegmentation>=')
    assert extras['mmpretrain'][0].startswith('mmpretrain>=')
    assert extras['all'] == ['dgmn_mm[mmdet,mmseg,mmpretrain]']
    # the installed versions satisfy the declared ranges
    from importlib.metadata import version

    from packaging.requirements import Requirement
    for req in deps + extras['mmdet'] + extras['mmseg'] + extras['mmpretrain']:
        r = Requirement(req)
        if r.name in ('torch', 'numpy', 'ftfy', 'regex'):
            continue
        assert r.specifier.contains(version(r.name), prereleases=True), (r, version(r.name))

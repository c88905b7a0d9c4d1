"""The model index: metafiles <-> configs, their content, the .mim layout, mmpretrain's model hub, mim."""
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def load_gen():
    spec = importlib.util.spec_from_file_location('gen_metafiles_under_test', ROOT / 'tools/misc/gen_metafiles.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = load_gen()
FOUND = GEN.find_configs()
CACHE = GEN.load_cache()


def read(path):
    with open(path) as f:
        return yaml.safe_load(f)


def test_every_family_folder_has_a_metafile_listing_exactly_its_configs():
    assert {(c, f) for c, f in FOUND} >= {('mmpretrain', 'dgmn2'), ('mmdet', 'dgmn2'), ('mmseg', 'dgmn2'),
                                          ('mmdet', 'dgmn'), ('mmseg', 'dgmn'), ('mmpretrain', 'dit'),
                                          ('mmdet', 'dit'), ('mmseg', 'dit')}
    for (codebase, family), paths in FOUND.items():
        meta = ROOT / 'configs' / codebase / family / 'metafile.yml'
        assert meta.is_file(), f'{meta} missing: run python tools/misc/gen_metafiles.py'
        listed = [m['Config'] for m in read(meta)['Models']]
        assert sorted(listed) == sorted(paths), (
            f'{meta} is out of date (run tools/misc/gen_metafiles.py): '
            f'missing {sorted(set(paths) - set(listed))}, stale {sorted(set(listed) - set(paths))}')
        assert not any('/demo/' in p or '/_base_/' in p for p in listed)
    index = read(ROOT / 'model-index.yml')
    assert sorted(index['Import']) == sorted(f'configs/{c}/{f}/metafile.yml' for c, f in FOUND)


def test_metafile_content():
    names = []
    for (codebase, family), _ in FOUND.items():
        doc = read(ROOT / 'configs' / codebase / family / 'metafile.yml')
        (coll, ) = doc['Collections']
        assert coll['Paper']['Title'] and coll['Paper']['URL'].startswith('https://')
        assert (ROOT / coll['Code']['URL']).is_file() and coll['Code']['Version'].startswith('v')
        for m in doc['Models']:
            names.append(m['Name'])
            assert m['Name'] == Path(m['Config']).stem and m['In Collection'] == coll['Name']
            assert (ROOT / m['Config']).is_file()
            md = m['Metadata']
            assert isinstance(md['Parameters'], int) and md['Parameters'] > 1e6
            if 'FLOPs' in md:
                assert isinstance(md['FLOPs'], int) and md['FLOPs'] > 1e8 and 'x' in md['FLOPs Input']
            if codebase == 'mmpretrain':  # classifiers always get FLOPs at 224 x 224 unless the tracer failed
                assert md.get('FLOPs Input') == '224x224' or CACHE[m['Config']].get('flops_failed'), m['Name']
            for r in m.get('Results', []):
                assert set(r) == {'Task', 'Dataset', 'Metrics'} and r['Metrics']
                assert all(isinstance(v, float) for v in r['Metrics'].values())
            if 'Results' in m:
                assert m['Results Source'].startswith('reported by the paper')
            if 'Weights' in m:
                assert m['Weights'].startswith('https://drive.google.com/')
                assert m['Converted From'] == {'Weights': m['Weights'], 'Code': 'https://github.com/fudan-zvg/DGMN2'}
    assert len(names) == len(set(names))
    # the official README's links: every DGMN2 row of the paper tables has its weights
    dgmn2 = {m['Name']: m for c in CODEBASES_DGMN2 for m in read(ROOT / f'configs/{c}/dgmn2/metafile.yml')['Models']}
    assert dgmn2['dgmn2-tiny_8xb128_in1k']['Results'][0]['Metrics'] == {'Top 1 Accuracy': 78.7}
    assert 'Weights' in dgmn2['dgmn2-tiny_8xb128_in1k']
    mask = dgmn2['mask-rcnn_dgmn2-tiny_fpn_1x_coco']
    assert [r['Metrics'] for r in mask['Results']] == [{'box AP': 40.2}, {'mask AP': 37.2}]
    fpn = dgmn2['fpn_dgmn2-large_4xb2-40k_cityscapes-769x769']
    assert fpn['Results'][0]['Metrics'] == {'mIoU': 81.75, 'mIoU(ms+flip)': 82.64}
    assert sum('Weights' in m for m in dgmn2.values()) == 4 + 8 + 5 + 16  # cls, RetinaNet + Mask R-CNN, 4 DETRs + Sparse R-CNN, seg


CODEBASES_DGMN2 = ('mmpretrain', 'mmdet', 'mmseg')


def test_measured_numbers_match_the_tool():
    """Parameters and FLOPs in the metafile are what tools/analysis_tools/get_flops.py (dgmn_mm.analysis)
    measures now."""
    from dgmn_mm.analysis import get_flops
    doc = read(ROOT / 'configs/mmpretrain/dgmn2/metafile.yml')
    tiny = next(m for m in doc['Models'] if m['Name'] == 'dgmn2-tiny_8xb128_in1k')
    res = get_flops(str(ROOT / tiny['Config']))
    assert tiny['Metadata']['Parameters'] == res['params'] == 12101464
    assert tiny['Metadata']['FLOPs'] == res['impl']


def test_paper_table_lookup():
    assert GEN.paper_entry('deformable-detr_dgmn2-small_8xb2-50e_coco')[2] == {'box AP': 47.3}
    assert GEN.paper_entry('deformable-detr-refine-twostage_dgmn2-small_8xb2-50e_coco')[2] == {'box AP': 48.5}
    assert GEN.paper_entry('dgmn-da-dw_r101-d8_4xb2-40k_cityscapes-769x769')[2] == {'mIoU': 79.1}
    assert GEN.paper_entry('dgmn-base_r101-d8_4xb2-40k_cityscapes-769x769') is None
    assert GEN.paper_entry('mask-rcnn_dgmn2-tiny_fpn_amp-1x_coco') is None  # not a paper row


def test_mim_layout_in_the_checkout():
    mim = ROOT / 'dgmn_mm' / '.mim'
    for item in ('configs', 'tools', 'model-index.yml'):
        assert (mim / item).resolve() == (ROOT / item).resolve()
    from dgmn_mm.apis import metafiles, model_index_path
    assert Path(model_index_path()).resolve() == (ROOT / 'model-index.yml').resolve()
    assert [Path(p).parent.name for p in metafiles('mmpretrain')] == sorted(
        f for c, f in FOUND if c == 'mmpretrain')


def test_mmpretrain_model_hub(tmp_path):
    pytest.importorskip('mmpretrain')
    import dgmn_mm  # noqa: F401
    import mmpretrain
    from dgmn_mm.apis import register_mmpretrain_models
    names = mmpretrain.list_models('*dgmn2*')
    assert {'dgmn2-tiny_8xb128_in1k', 'dgmn2-small_8xb128_in1k', 'dgmn2-medium_8xb128_in1k',
            'dgmn2-large_8xb128_in1k'} <= set(names)
    assert not any(n.startswith(('mask-rcnn', 'retinanet', 'fpn_')) for n in names)  # classifiers only
    assert 'dit-b1_8xb128_in1k' in mmpretrain.list_models('dit-*')
    assert register_mmpretrain_models() == register_mmpretrain_models()  # idempotent
    model = mmpretrain.get_model('dgmn2-tiny_8xb128_in1k')
    assert mmpretrain.apis.ModelHub.get('dgmn2-tiny_8xb128_in1k').weights is None  # Drive pages: not fetchable
    assert type(model.backbone).__name__ == 'DGMN2' and model.head.num_classes == 1000
    import matplotlib.cbook
    img = matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    inferencer = mmpretrain.ImageClassificationInferencer('dgmn2-tiny_8xb128_in1k', device='cpu')
    out = inferencer(img)[0]
    assert 0 <= out['pred_label'] < 1000 and out['pred_scores'].shape == (1000, )
    # a local checkpoint by name (published file of this random model)
    import torch
    from dgmn_mm.apis import save_published
    ckpt = save_published(model.state_dict(), str(tmp_path / 'tiny.pth'), dict(dataset_meta=dict(
        classes=[f'c{i}' for i in range(1000)])))
    inferencer = mmpretrain.ImageClassificationInferencer('dgmn2-tiny_8xb128_in1k', pretrained=ckpt, device='cpu')
    out2 = inferencer(img)[0]
    assert out2['pred_class'] == f"c{out2['pred_label']}"
    loaded = inferencer.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_wheel_ships_mim_payload_and_mim_finds_it(tmp_path):
    """A wheel built from the sources carries dgmn_mm/.mim; installed (here: into a target folder),
    `mim search dgmn_mm` lists the models and `mim run dgmn_mm get_flops` finds the tool."""
    src = tmp_path / 'src'
    src.mkdir()
    for item in ('dgmn_mm', 'configs', 'tools', 'model-index.yml', 'setup.py', 'pyproject.toml', 'README.md',
                 'MANIFEST.in'):
        p = ROOT / item
        if p.is_dir():
            shutil.copytree(p, src / item, symlinks=True,
                            ignore=shutil.ignore_patterns('__pycache__', '*.so', '*.pyc'))
        elif p.exists():
            shutil.copy2(p, src / item)
    env = dict(os.environ, DGMN_MM_BUILD_EXT='0', PIP_NO_INDEX='1', OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w',
                          str(tmp_path / 'wheels'), str(src)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (wheel, ) = (tmp_path / 'wheels').glob('dgmn_mm-*.whl')
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ('dgmn_mm/.mim/model-index.yml', 'dgmn_mm/.mim/configs/mmdet/dgmn2/metafile.yml',
              'dgmn_mm/.mim/configs/mmpretrain/dgmn2/dgmn2-tiny_8xb128_in1k.py', 'dgmn_mm/.mim/tools/train.py',
              'dgmn_mm/.mim/tools/analysis_tools/get_flops.py', 'dgmn_mm/registry.py'):
        assert f in names, f
    target = tmp_path / 'site'
    res = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--target', str(target),
                          str(wheel)], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    env['PYTHONPATH'] = str(target)
    mim = [sys.executable, '-c', 'import sys; from mim.cli import cli; sys.exit(cli())']
    res = subprocess.run(mim + ['search', 'dgmn_mm', '--field', 'weight', 'config'], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert 'dgmn2-tiny_8xb128_in1k' in res.stdout and 'mask-rcnn_dgmn2-tiny_fpn_1x_coco' in res.stdout
    cfg = str(ROOT / 'configs/mmpretrain/demo/dgmn2-tiny_synthetic.py')
    res = subprocess.run(mim + ['run', 'dgmn_mm', 'get_flops', cfg, '--shape', '64', '64'], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert 'Input shape: (1, 3, 64, 64)' in res.stdout and 'Params:' in res.stdout

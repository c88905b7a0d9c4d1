"""mim (openmim) finds the installed dgmn_mm: ``mim search / run / train / test dgmn_mm`` through the
environment's own ``mim`` executable.

openmim 0.3 locates a codebase as ``pkg_resources.get_distribution(name).location`` joined with the package
name and reads ``.mim/model-index.yml``, ``.mim/tools`` and ``.mim/configs`` there. A wheel install copies
``.mim`` into ``site-packages/dgmn_mm`` (tested in ``tests/test_configs/test_model_index.py``); the set-up's
editable install is a setuptools *develop* install, whose metadata sits in the work tree, so the location is
the repository and ``dgmn_mm/.mim`` (symlinks to ``configs``, ``tools``, ``model-index.yml``) is found. A
PEP 660 editable install keeps its metadata in site-packages, where there is no ``dgmn_mm`` folder: these
tests fail on that layout. They are skipped only when dgmn_mm is not installed at all (imported from the
source tree) or openmim is missing.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MIM = Path(sys.executable).parent / 'mim'


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    pytest.importorskip('mim')
    if not MIM.is_file():
        pytest.skip(f'no mim executable beside {sys.executable}')
    # in a fresh process outside the repository: here the checkout's dgmn_mm.egg-info is on sys.path
    code = 'import importlib.metadata as m; m.version("dgmn_mm")'
    res = subprocess.run([sys.executable, '-c', code], cwd=tmp_path_factory.mktemp('outside'),
                         env={k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}, capture_output=True)
    if res.returncode != 0:
        pytest.skip('dgmn_mm is not installed in this environment (run `make setup`)')


def index_models():
    """Every model of model-index.yml (through the per-family metafiles): name -> metafile entry."""
    with open(ROOT / 'model-index.yml') as f:
        imports = yaml.safe_load(f)['Import']
    models = {}
    for meta in imports:
        with open(ROOT / meta) as f:
            for m in yaml.safe_load(f)['Models']:
                models[m['Name']] = m
    return models


def run_mim(args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    env.update(OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    res = subprocess.run([str(MIM)] + list(args), cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=timeout)
    assert res.returncode == 0, f'mim {" ".join(args)}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}'
    return res.stdout


def test_mim_locates_the_imported_package(installed, tmp_path):
    """mim's own lookup gives the folder ``import dgmn_mm`` loads, and the model index is in its .mim. In a
    fresh process outside the repository: pytest puts the repository (with its egg-info) on sys.path, which
    would hide a wrong install layout here."""
    code = ('import importlib.util, os; from mim.utils import get_installed_path; '
            "print(get_installed_path('dgmn_mm')); "
            "print(os.path.dirname(importlib.util.find_spec('dgmn_mm').origin))")  # where `import` loads it from
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    res = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=dict(env, OMP_NUM_THREADS='1'),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    mim_path, imported = (Path(p) for p in res.stdout.split('\n')[-3:-1])
    assert imported.resolve() == (ROOT / 'dgmn_mm').resolve()
    assert mim_path.resolve() == imported.resolve(), (
        f'mim looks for dgmn_mm in {mim_path}, but it is imported from {imported}: a PEP 660 editable '
        'install; re-run `make setup` (it makes a setuptools develop install)')
    assert (mim_path / '.mim' / 'model-index.yml').resolve() == (ROOT / 'model-index.yml').resolve()
    for item in ('configs', 'tools'):
        assert (mim_path / '.mim' / item).resolve() == (ROOT / item).resolve()


def search_json(args, tmp_path):
    """`mim search dgmn_mm ARGS --json F`: {field: {config id: value}} as mim tabulates it."""
    out = tmp_path / 'search.json'
    stdout = run_mim(['search', 'dgmn_mm'] + list(args) + ['--json', str(out)], cwd=tmp_path)
    with open(out) as f:
        return json.load(f), stdout


def test_mim_search_lists_every_model(installed, tmp_path):
    table, _ = search_json([], tmp_path)
    models = index_models()
    assert set(table['config']) == set(models)
    for name, m in models.items():
        assert table['config'][name] == m['Config']
        assert table['parameters'][name] == m['Metadata']['Parameters']
        assert table['weight'].get(name) == m.get('Weights')
    assert table['imagenet-1k/top_1_accuracy']['dgmn2-tiny_8xb128_in1k'] == 78.7  # the paper's Table 1 row


def test_mim_search_filters(installed, tmp_path):
    # the DGMN2 ImageNet classifiers, as printed for a user
    out = run_mim(['search', 'dgmn_mm', '--model', 'dgmn2', '--dataset', 'imagenet-1k', '--field', 'parameters',
                   'imagenet-1k/top_1_accuracy'], cwd=tmp_path)
    expected = {n for n, m in index_models().items() if m['In Collection'] == 'DGMN2'
                and m['Config'].startswith('configs/mmpretrain/')}
    assert set(re.findall(r'^config id: (\S+)$', out, flags=re.M)) == expected and len(expected) >= 4
    top1 = dict(re.findall(r'^config id: (\S+)\n(?:(?!config id:).*\n)*?imagenet-1k/top_1_accuracy\s+([\d.]+)$', out, flags=re.M))
    assert {k: float(v) for k, v in top1.items()} == {
        'dgmn2-tiny_8xb128_in1k': 78.7, 'dgmn2-small_8xb128_in1k': 81.7, 'dgmn2-medium_8xb128_in1k': 82.5,
        'dgmn2-large_8xb128_in1k': 83.3}  # the paper's ImageNet table


@pytest.mark.slow
def test_mim_run_get_flops(installed, tmp_path):
    cfg = ROOT / 'configs/mmpretrain/demo/dgmn2-tiny_synthetic.py'
    out = run_mim(['run', 'dgmn_mm', 'get_flops', str(cfg), '--shape', '64', '64'], cwd=tmp_path)
    assert 'Use the script' in out and str(ROOT / 'dgmn_mm' / '.mim' / 'tools') in out
    assert 'Input shape: (1, 3, 64, 64)' in out
    params = re.search(r'Params:\s*([\d.]+)\s*M', out)
    assert params and abs(float(params.group(1)) - 11.59) < 0.01, out[-2000:]  # DGMN2-Tiny backbone + 4-way head


@pytest.mark.slow
def test_mim_train_then_test(installed, tmp_path):
    """`mim train dgmn_mm` with a config given by file name only (mim finds it in .mim/configs), one short
    epoch on the synthetic class folders; then `mim test dgmn_mm` on the checkpoint it wrote."""
    data = tmp_path / 'data'
    subprocess.run([sys.executable, str(ROOT / 'tools/make_demo_data.py'), '--out', str(data), '--parts',
                    'imagenet', '--imagenet-train', '4', '--imagenet-val', '2', '--imagenet-size', '32'],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / 'work'
    root = f'{data}/imagenet/'
    opts = ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1',
            f'train_dataloader.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', 'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False', 'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False', 'train_dataloader.batch_size=8']
    out = run_mim(['train', 'dgmn_mm', 'dgmn2-tiny_synthetic.py', '--work-dir', str(work), '--cfg-options']
                  + opts, cwd=tmp_path)
    assert str(ROOT / 'configs/mmpretrain/demo/dgmn2-tiny_synthetic.py') in out  # found by name
    ckpt = work / 'epoch_1.pth'
    assert ckpt.is_file(), sorted(p.name for p in work.iterdir())
    out = run_mim(['test', 'dgmn_mm', 'dgmn2-tiny_synthetic.py', '--checkpoint', str(ckpt), '--work-dir',
                   str(tmp_path / 'test'), '--cfg-options'] + opts, cwd=tmp_path)
    assert 'Testing command is' in out
    logs = list((tmp_path / 'test').rglob('*.log'))
    assert logs and any(re.search(r'accuracy/top1: [\d.]+', p.read_text()) for p in logs)

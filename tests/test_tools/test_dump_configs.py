"""tools/misc/dump_configs.py: merged config dicts as canonical JSON, and the comparison of two dumps.

The tool is run as a user runs it (a subprocess); the config trees are written here, so every case is a
few small files and the expected differences are known exactly.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / 'tools' / 'misc' / 'dump_configs.py'

# one config written flat ...
FLAT = """
model = dict(type='Net', backbone=dict(type='B', arch='tiny', out_indices=(0, 1)), neck=dict(channels=[8, 16]))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4))
"""
# ... and the same config through a chain of _base_ files, a _base_ list and _delete_
BASES = {
    '_base_/models/net_a.py': """
model = dict(type='Net', backbone=dict(type='A', depth=50, frozen=1), neck=dict(channels=[8, 16]))
""",
    '_base_/models/net_b.py': """
_base_ = './net_a.py'
model = dict(backbone=dict(_delete_=True, type='B', arch='tiny', out_indices=(0, 1)))
""",
    '_base_/schedules/sgd.py': """
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.02, momentum=0.9))
""",
    '_base_/schedules/adamw.py': """
_base_ = './sgd.py'
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))
""",
}
LEAF = """
_base_ = ['../_base_/models/net_b.py', '../_base_/schedules/adamw.py']
"""


def write(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS='ignore'))


def test_refactored_tree_is_identical_and_changes_are_named(tmp_path):
    flat, based, changed = tmp_path / 'flat', tmp_path / 'based', tmp_path / 'changed'
    write(flat, {'fam/net.py': FLAT})
    write(based, {**BASES, 'fam/net.py': LEAF})
    # the tuple becomes a list, one value changes, and a config appears that the others lack
    write(changed, {**BASES, 'fam/net.py': LEAF + "model = dict(backbone=dict(out_indices=[0, 1]), "
                                                  "neck=dict(channels=[8, 32]))\n",
                    'fam/extra.py': FLAT})
    for tree in (flat, based, changed):
        res = run('dump', tmp_path / f'{tree.name}_dump', '--root', tree)
        assert res.returncode == 0, res.stderr
    # the _base_ files are building blocks, not configs: not dumped
    assert sorted(p.name for p in (tmp_path / 'based_dump').rglob('*.json')) == ['net.py.json']
    assert sorted(p.name for p in (tmp_path / 'changed_dump').rglob('*.json')) == ['extra.py.json', 'net.py.json']

    dumped = json.loads((tmp_path / 'based_dump' / 'fam' / 'net.py.json').read_text())
    assert dumped['model']['backbone'] == {'type': 'B', 'arch': 'tiny', 'out_indices': {'__tuple__': [0, 1]}}
    assert dumped['optim_wrapper']['optimizer'] == {'type': 'AdamW', 'lr': 1e-4, 'weight_decay': 1e-4}

    same = run('compare', tmp_path / 'flat_dump', tmp_path / 'based_dump')
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.strip().endswith('1 configs: all identical')
    # a second dump of the same tree is byte-identical
    assert run('dump', tmp_path / 'again', '--root', based).returncode == 0
    assert ((tmp_path / 'again' / 'fam' / 'net.py.json').read_bytes()
            == (tmp_path / 'based_dump' / 'fam' / 'net.py.json').read_bytes())

    diff = run('compare', tmp_path / 'based_dump', tmp_path / 'changed_dump')
    assert diff.returncode == 1
    lines = diff.stdout.strip().splitlines()
    assert lines == ['fam/extra.py: only in the second dump',
                     'fam/net.py: model.backbone.out_indices; model.neck.channels[1]',
                     '2 configs: 2 differ']


def test_only_and_errors(tmp_path):
    write(tmp_path / 'tree', {**BASES, 'fam/net.py': LEAF, 'other/net.py': FLAT})
    res = run('dump', tmp_path / 'out', '--root', tmp_path / 'tree', '--only', 'other/')
    assert res.returncode == 0, res.stderr
    assert [p.relative_to(tmp_path / 'out').as_posix() for p in (tmp_path / 'out').rglob('*.json')] == [
        'other/net.py.json']
    res = run('dump', tmp_path / 'out2', '--root', tmp_path / 'tree', '--only', 'nothing/')
    assert res.returncode != 0 and "no config (.py outside _base_ folders)" in res.stderr
    (tmp_path / 'empty1').mkdir()
    (tmp_path / 'empty2').mkdir()
    res = run('compare', tmp_path / 'empty1', tmp_path / 'empty2')
    assert res.returncode != 0 and 'holds a dump' in res.stderr

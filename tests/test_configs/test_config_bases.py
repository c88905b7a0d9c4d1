"""The shared ``_base_`` files of ``configs/``: each is used by a config, loads on its own and adds to or
changes what it inherits (a file that only re-exports one base is not a building block)."""
import ast
import importlib
import os.path as osp
import warnings
from pathlib import Path

import pytest
from mmengine.config import Config

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
BASE_FILES = sorted(p for p in CONFIGS.rglob('*.py') if '_base_' in p.relative_to(CONFIGS).parts)


def bases_of(path):
    """The ``_base_`` entries of a config file, relative ones resolved to absolute paths."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '_base_' for t in node.targets):
            value = ast.literal_eval(node.value)
            entries = [value] if isinstance(value, str) else list(value)
            return [e if '::' in e else osp.normpath(osp.join(path.parent, e)) for e in entries]
    return []


def test_there_are_shared_bases_per_codebase():
    codebases = {p.relative_to(CONFIGS).parts[0] for p in BASE_FILES}
    assert codebases == {'mmdet', 'mmseg', 'mmpretrain'}


def test_every_base_file_is_used():
    used = {b for p in CONFIGS.rglob('*.py') for b in bases_of(p)}
    unused = [str(p.relative_to(CONFIGS)) for p in BASE_FILES if str(p) not in used]
    assert not unused, f'_base_ files no config inherits: {unused}'


def drop_scope(obj):
    """A config value without mmengine's ``_scope_`` keys (set on dicts of ``mmdet::``-style bases)."""
    if isinstance(obj, dict):
        return {k: drop_scope(v) for k, v in obj.items() if k != '_scope_'}
    if isinstance(obj, (list, tuple)):
        return type(obj)(drop_scope(v) for v in obj)
    return obj


def load(path):
    if '::' in path:  # an upstream file, from the package's .mim/configs as mmengine resolves it
        scope, rel = path.split('::')
        path = str(Path(importlib.import_module(scope).__file__).parent / '.mim' / 'configs' / rel)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return drop_scope(Config.fromfile(path).to_dict())


@pytest.mark.parametrize('path', BASE_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_base_file_loads_and_changes_what_it_inherits(path):
    merged = load(str(path))
    bases = bases_of(path)
    parents = {}
    for base in bases:
        parents.update(load(base))
    assert merged and set(parents) <= set(merged)
    if len(bases) == 1:  # several bases: the file is their combination; one base: it must change something
        assert merged != parents, f'{path.name} only re-exports its base'

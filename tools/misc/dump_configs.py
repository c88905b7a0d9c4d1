"""Dump the merged dict of every config as canonical JSON, and compare two dumps.

Moving blocks of configs into ``_base_`` files, or changing which config inherits which, must not change
what any config means. This tool makes that checkable::

    python tools/misc/dump_configs.py dump work_dirs/cfg_before        # before the change
    # ... edit the configs ...
    python tools/misc/dump_configs.py dump work_dirs/cfg_after
    python tools/misc/dump_configs.py compare work_dirs/cfg_before work_dirs/cfg_after

``dump`` loads every ``.py`` file below ``--root`` (default: the repository's ``configs/``; files inside a
``_base_`` folder are skipped, they are building blocks, not configs) with ``mmengine.Config.fromfile``
(which imports the config's ``custom_imports``, e.g. ``dgmn_mm``) and writes ``OUT/<path>.json``: the merged
dict with sorted keys, tuples kept apart from lists (``{"__tuple__": [...]}``), other non-JSON values as
their ``repr``. ``--only PREFIX`` (repeatable) restricts it to configs whose path below the root starts with
``PREFIX``. Nothing path-dependent is written (``Config.to_dict`` has no file name), so two dumps of the same
tree are byte-identical.

``compare`` prints the configs that are in only one dump and, for each config whose dicts differ, the dotted
keys that differ (list items as ``key[i]``); it exits with status 1 when anything differs, 0 when every
config is identical.
"""
import argparse
import json
import os
import os.path as osp
import sys
import warnings

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))


def canonical(obj):
    """A JSON-serialisable form of a config value that keeps tuples and lists apart."""
    if isinstance(obj, dict):
        return {str(k): canonical(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {'__tuple__': [canonical(v) for v in obj]}
    if isinstance(obj, list):
        return [canonical(v) for v in obj]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    return {'__repr__': repr(obj), '__type__': type(obj).__name__}


def find_configs(root, only=()):
    """Paths (relative to ``root``, sorted) of the ``.py`` files below it that are not in a ``_base_`` folder."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != '_base_' and not d.startswith('.'))
        for name in sorted(filenames):
            if name.endswith('.py'):
                rel = osp.relpath(osp.join(dirpath, name), root).replace(os.sep, '/')
                if not only or any(rel.startswith(p) for p in only):
                    found.append(rel)
    return found


def dump(root, out, only=()):
    """Write ``out/<rel>.json`` for every config below ``root``; returns the relative config paths."""
    from mmengine.config import Config
    paths = find_configs(root, only)
    if not paths:
        raise ValueError(f'no config (.py outside _base_ folders) below {root!r}' +
                         (f' starting with {list(only)}' if only else ''))
    for rel in paths:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            merged = Config.fromfile(osp.join(root, rel)).to_dict()
        dst = osp.join(out, rel + '.json')
        os.makedirs(osp.dirname(dst), exist_ok=True)
        with open(dst, 'w') as f:
            json.dump(canonical(merged), f, sort_keys=True, indent=1)
            f.write('\n')
    return paths


def _differences(a, b, prefix=''):
    """Dotted keys at which the canonical values ``a`` and ``b`` differ (depth-first, sorted)."""
    if isinstance(a, dict) and isinstance(b, dict) and not ({'__tuple__', '__repr__'} & (a.keys() | b.keys())):
        out = []
        for k in sorted(a.keys() | b.keys()):
            key = f'{prefix}.{k}' if prefix else k
            if k not in a or k not in b:
                out.append(key + (' (only in the second)' if k not in a else ' (only in the first)'))
            else:
                out += _differences(a[k], b[k], key)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += _differences(x, y, f'{prefix}[{i}]')
        return out
    return [] if a == b else [prefix or '(the whole dict)']


def compare(first, second):
    """{config: [differences]} between two dump folders (empty when every config is identical)."""
    def jsons(folder):
        found = {}
        for dirpath, _, filenames in os.walk(folder):
            for name in filenames:
                if name.endswith('.json'):
                    path = osp.join(dirpath, name)
                    found[osp.relpath(path, folder).replace(os.sep, '/')[:-len('.json')]] = path
        return found

    a, b = jsons(first), jsons(second)
    if not a and not b:
        raise ValueError(f'neither {first!r} nor {second!r} holds a dump (no .json file)')
    report = {}
    for rel in sorted(a.keys() | b.keys()):
        if rel not in b:
            report[rel] = ['only in the first dump']
        elif rel not in a:
            report[rel] = ['only in the second dump']
        else:
            with open(a[rel]) as fa, open(b[rel]) as fb:
                diff = _differences(json.load(fa), json.load(fb))
            if diff:
                report[rel] = diff
    return report, len(a.keys() | b.keys())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)
    p_dump = sub.add_parser('dump', help='write the merged dict of every config as JSON')
    p_dump.add_argument('out', help='output folder')
    p_dump.add_argument('--root', default=osp.join(ROOT, 'configs'), help='folder of the configs')
    p_dump.add_argument('--only', action='append', default=[], help='path prefix below the root (repeatable)')
    p_cmp = sub.add_parser('compare', help='compare two dumps; exit status 1 when they differ')
    p_cmp.add_argument('first')
    p_cmp.add_argument('second')
    args = parser.parse_args(argv)
    try:
        if args.command == 'dump':
            paths = dump(args.root, args.out, args.only)
            print(f'{len(paths)} configs dumped to {args.out}')
            return 0
        report, total = compare(args.first, args.second)
    except ValueError as e:
        parser.error(str(e))
    for rel, diff in report.items():
        shown = diff[:10] + ([f'... {len(diff) - 10} more'] if len(diff) > 10 else [])
        print(f'{rel}: ' + '; '.join(shown))
    print(f'{total} configs: ' + (f'{len(report)} differ' if report else 'all identical'))
    return 1 if report else 0


if __name__ == '__main__':
    sys.exit(main())

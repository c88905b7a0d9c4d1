"""Write the OpenMMLab model index: ``configs/<codebase>/<family>/metafile.yml`` and ``model-index.yml``.

Usage::

    python tools/misc/gen_metafiles.py [--flops {all,classifiers,none}] [--recompute] [--only GLOB]

Every config of a family folder (``configs/{mmpretrain,mmdet,mmseg}/{dgmn2,dgmn,dit}/``, sub-folders
included, ``_base_`` and ``demo`` excluded) becomes one model entry:

- ``Name``: the config's file name without ``.py``; ``In Collection``: the family; ``Config``: its path.
- ``Metadata``: ``Parameters`` and ``FLOPs`` measured with ``tools/analysis_tools/get_flops.py``
  (:func:`dgmn_mm.analysis.get_flops`; the ``impl`` count: multiply-accumulates of this implementation,
  random input of the tool's default size: 224 x 224 for classifiers, 800 x 1333 for detectors, 769 x 769
  for segmentors, padded as the data preprocessor pads; the input size is recorded as ``FLOPs Input``),
  plus ``Training Data``.
- ``Results``: the numbers **reported by the papers** (TPAMI 2022 Tables 2-11 and the official DGMN2
  README; the DiT paper's Tables 1, 4-8), with ``Results Source`` naming the table. Nothing here was trained.
- ``Weights`` and ``Converted From``: the official DGMN2 download links where the official repository
  (github fudan-zvg/DGMN2) publishes one. They are the official files, which load into these configs
  through the backbone's ``init_cfg`` or after ``tools/model_converters/dgmn2_official_to_mm.py``.

Measurements are cached in ``tools/misc/metafile_stats.json`` per config, keyed by a hash of the config's
``model`` section and the input size, so a re-run only measures configs whose model changed (``--recompute``
measures everything again). ``--flops classifiers`` counts FLOPs of the mmpretrain configs only (224 x 224,
seconds each) and parameters only of the detectors and segmentors (a detector at 800 x 1333 takes minutes on
a small CPU); cached FLOPs are kept either way. ``--flops none`` counts parameters only.
"""
import argparse
import fnmatch
import hashlib
import json
import os
import os.path as osp
import re
import sys
from collections import OrderedDict

ROOT = osp.abspath(osp.join(osp.dirname(__file__), '..', '..'))
sys.path.insert(0, ROOT)

CACHE = osp.join(ROOT, 'tools', 'misc', 'metafile_stats.json')
CODEBASES = ('mmpretrain', 'mmdet', 'mmseg')
FAMILIES = ('dgmn2', 'dgmn', 'dit')
EXCLUDED_DIRS = ('_base_', 'demo')

OFFICIAL_CODE = 'https://github.com/fudan-zvg/DGMN2'
TPAMI = dict(Title='Dynamic Graph Message Passing Networks for Visual Recognition',
             URL='https://arxiv.org/abs/2209.09760')
CVPR = dict(Title='Dynamic Graph Message Passing Networks', URL='https://arxiv.org/abs/1908.06955')
DIT_PAPER = dict(Title='Dynamic Token Routing for Vision Transformers (DiT)', URL='https://github.com/Maycbj/DiT')


def _version():
    init = open(osp.join(ROOT, 'dgmn_mm', '__init__.py')).read()
    return 'v' + re.search(r"__version__ = '([^']+)'", init).group(1)


def collections(codebase, family):
    """The Collection entry of a family folder."""
    version = _version()
    if family == 'dgmn2':
        return dict(Name='DGMN2', Metadata=dict(Architecture=['DGMN2', 'Dynamic Graph Message Passing']),
                    Paper=TPAMI, Code=dict(URL='dgmn_mm/models/backbones/dgmn2.py', Version=version),
                    **{'Official Code': OFFICIAL_CODE})
    if family == 'dgmn':
        return dict(Name='DGMN', Metadata=dict(Architecture=['ResNet', 'DGMN']), Paper=CVPR,
                    Code=dict(URL='dgmn_mm/models/layers/dgmn.py', Version=version),
                    **{'Official Code': 'https://github.com/lzrobots/dgmn'})
    return dict(Name='DiT', Metadata=dict(Architecture=['DiT', 'Dynamic Token Routing']), Paper=DIT_PAPER,
                Code=dict(URL='dgmn_mm/models/backbones/dit.py', Version=version),
                **{'Official Code': 'https://github.com/Maycbj/DiT'})


# ------------------------------------------------------------------------------------------------------
# The papers' results: config name pattern -> (Task, Dataset, Metrics, source, weights URL or None)
# ------------------------------------------------------------------------------------------------------
_GD = 'https://drive.google.com/file/d/{}/view?usp=sharing'
SIZES = ('tiny', 'small', 'medium', 'large')
PAPER = {}

for s, acc, w in zip(SIZES, (78.7, 81.7, 82.5, 83.3),
                     ('1H21VwFOzkv47GIXnV2a47F2K98wn3s0a', '1bOhpFnZLO8Va4LJccrlnazD1aL61wm5b',
                      '13iDrUlynBs83pdhUoFmwQoZbAf4oDvTm', '1nXvXHXJZpsScPnI2VQe8ZgrGXuMpbHia')):
    PAPER[f'dgmn2-{s}_8xb128_in1k'] = ('Image Classification', 'ImageNet-1k', {'Top 1 Accuracy': acc},
                                       'TPAMI 2022 Table 6; official README', _GD.format(w))
for s, ap, w in zip(SIZES, (39.7, 42.5, 43.7, 44.7),
                    ('14gjw75Cz8iytUFDQP9ioIfiMni6e-xRl', '1JIIuf7iNA9-tJoUefUNc1O1laJSW30Hx',
                     '1WU4Kv1Z0Q4b3VMIcJPi7LSmUSYqlywWU', '1kws1Q6Ccwipaimour9F67EAg2bMzXlAj')):
    PAPER[f'retinanet_dgmn2-{s}_fpn_1x_coco'] = ('Object Detection', 'COCO', {'box AP': ap},
                                                 'TPAMI 2022 Table 7; official README', _GD.format(w))
for s, ap, mask, w in zip(SIZES, (40.2, 43.4, 44.4, 46.2), (37.2, 39.7, 40.2, 41.6),
                          ('17vGTzN1dazQ1Euu5mpBMvEro5HafAedT', '1g1lp7kUIM5gvxROfTAvI2EVjpPL-HW6r',
                           '1MO0BLtIrRohAW7BPEnr5G63mCBDA4Yey', '1DFkSQmfHI9z6IKag21BzRb7LhWvHotXm')):
    PAPER[f'mask-rcnn_dgmn2-{s}_fpn_1x_coco'] = (
        ['Object Detection', 'Instance Segmentation'], 'COCO', [{'box AP': ap}, {'mask AP': mask}],
        'TPAMI 2022 Table 8; official README', _GD.format(w))
for s, ap, w in zip(SIZES[:3], (44.4, 47.3, 48.4),
                    ('1FZ9HIzQ9ty3TUeW30TCLxI9zKopVcHHG', '1cy9-HftCSkX5gSMH22ThjJNn8Br8EPke',
                     '1bXNPKpWSAu_i0vtQCcBcoP7yUJQUIHN3')):
    PAPER[f'deformable-detr_dgmn2-{s}_*'] = ('Object Detection', 'COCO', {'box AP': ap},
                                             'TPAMI 2022 Table 9; official README', _GD.format(w))
PAPER['deformable-detr-refine-twostage_dgmn2-small_*'] = (
    'Object Detection', 'COCO', {'box AP': 48.5}, 'TPAMI 2022 Table 9; official README',
    _GD.format('1svE9XGe6bwvGtiauQenYIjpnaOkQ0x9e'))
PAPER['sparse-rcnn_dgmn2-small_*'] = ('Object Detection', 'COCO', {'box AP': 48.2},
                                      'TPAMI 2022 Table 10; official README',
                                      _GD.format('1EvzDIdc_zNPhUlDweP_g9-Iqf2_XXMr6'))
_SEG = {
    'fpn': ((78.09, 80.65, 80.60, 81.75), (79.40, 81.58, 81.79, 82.64),
            ('1sg6Mlzg12uTIQvE5XEebzNkd-Tino0eU', '19H1ynlczV3dKC5qvTl3l2r-ygp26g5ho',
             '1IWXPpx6ra7n1svK0yJHD9E4lr7M0lhVU', '1gtE2IhkUtsjY6HPajUwlz3pE2szyjNuS')),
    'setr-naive': ((77.23, 80.31, 80.83, 81.80), (78.23, 81.04, 81.39, 82.61),
                   ('1RuPaccxYYcpTJ38hpTzUmThL4yRlgT6o', '1Vrg25uAGUf0ASeLHgUQCLsMzYWAO-BQO',
                    '1HoGC-t51bhMqLYr35vDkAIHDlVPJQ8Wy', '1hYqUr0nF9tKKDhIuJ-heAQwtFCKtPMp9')),
    'setr-pup': ((78.25, 79.78, 80.97, 81.58), (79.26, 80.73, 81.80, 82.27),
                 ('1Fz_VgIDvX7WcrEJcdYiB85KWOUGz7qPC', '1w-XcAmeTUIAQG1WjYubmTRm88_IMPigP',
                  '1zQM9CUxXDVfGZsXSkoRt1u-Yak3g_9jN', '1-ZbdeKIFGGBo73QZjGsIBJTA8vdbeZBL')),
    'setr-mla': ((78.25, 80.79, 81.09, 81.55), (79.32, 81.62, 82.00, 81.98),
                 ('1EpgGGDzRzwMslW07ML93fO0VgIKbqFWr', '1SxjazS3tTwC43H-t1fs1--I3LpgwH9ty',
                  '1L_VZSB3TjnEUtzz1cXTY2iR5Grsl-yzM', '1yRz3yjk6Aox-weRZLQL7-buW0G_RqiPX')),
}
for head, (ss, ms, ws) in _SEG.items():
    for s, a, b, w in zip(SIZES, ss, ms, ws):
        PAPER[f'{head}_dgmn2-{s}_*_cityscapes-*'] = (
            'Semantic Segmentation', 'Cityscapes', {'mIoU': a, 'mIoU(ms+flip)': b},
            'TPAMI 2022 Table 11; official README', _GD.format(w))
# DGMN (CVPR 2020 / TPAMI 2022): Cityscapes Table 2 (val), COCO Tables 3 (val) and 5 (test-dev)
for name, miou in (('dgmn-da_*', 76.5), ('dgmn-da-dw_*', 79.1), ('dgmn-da-dw-ds_*', 80.4),
                   ('fcn_r101-d8_*', 75.0), ('fcn-dcnv2_*', 78.2), ('deeplabv3_r101-d8_*', 78.9),
                   ('nonlocal_r101-d8_*', 79.0)):
    PAPER[name] = ('Semantic Segmentation', 'Cityscapes', {'mIoU': miou}, 'TPAMI 2022 Table 2', None)
for name, (box, mask), table, dataset in (
        ('mask-rcnn_r50-dgmn-res4_fpn_1x_coco', (39.5, 35.7), 'Table 3', 'COCO'),
        ('mask-rcnn_r50-dgmn-c5_fpn_1x_coco', (40.2, 36.0), 'Table 3', 'COCO'),
        ('mask-rcnn_r50-dgmn-c4c5_fpn_1x_coco', (41.0, 36.8), 'Table 5', 'COCO test-dev'),
        ('mask-rcnn_r101-dgmn-c5_fpn_1x_coco', (41.9, 37.6), 'Table 5', 'COCO test-dev'),
        ('mask-rcnn_x101-64x4d-dgmn-c5_fpn_1x_coco', (44.3, 39.5), 'Table 5', 'COCO test-dev')):
    PAPER[name] = (['Object Detection', 'Instance Segmentation'], dataset, [{'box AP': box}, {'mask AP': mask}],
                   f'TPAMI 2022 {table}', None)
# DiT paper: Table 1 (ImageNet), Table 4 (COCO 1x), Table 5 (ADE20K), Tables 6-8 (ablations)
for b, acc in zip(range(1, 6), (79.9, 83.1, 84.2, 84.5, 84.8)):
    PAPER[f'dit-b{b}_8xb128_in1k'] = ('Image Classification', 'ImageNet-1k', {'Top 1 Accuracy': acc},
                                      'DiT paper Table 1', None)
for variant, acc, table in (('static', 80.7, 6), ('fully', 83.5, 6), ('random', 79.4, 7), ('attention', 81.3, 7),
                            ('scale-only', 82.9, 8), ('depth-only', 82.2, 8)):
    PAPER[f'dit-b2-{variant}_8xb128_in1k'] = ('Image Classification', 'ImageNet-1k', {'Top 1 Accuracy': acc},
                                              f'DiT paper Table {table}', None)
for b, (ret, box, mask) in zip(range(1, 5), ((42.3, 42.9, 39.9), (45.6, 46.4, 42.2), (46.8, 48.0, 41.7),
                                             (46.9, 48.2, 43.3))):
    PAPER[f'retinanet_dit-b{b}_fpn_1x_coco'] = ('Object Detection', 'COCO', {'box AP': ret},
                                                'DiT paper Table 4', None)
    PAPER[f'mask-rcnn_dit-b{b}_fpn_1x_coco'] = (['Object Detection', 'Instance Segmentation'], 'COCO',
                                                [{'box AP': box}, {'mask AP': mask}], 'DiT paper Table 4', None)
for b, (ret, box, mask) in zip((2, 3, 4), ((47.5, 48.9, 43.7), (47.6, 48.8, 43.7), (48.0, 49.4, 44.0))):
    PAPER[f'retinanet_dit-b{b}_fpn_ms-640-800-3x_coco'] = ('Object Detection', 'COCO', {'box AP': ret},
                                                           'DiT paper Table 3', None)
    PAPER[f'mask-rcnn_dit-b{b}_fpn_ms-640-800-3x_coco'] = (
        ['Object Detection', 'Instance Segmentation'], 'COCO', [{'box AP': box}, {'mask AP': mask}],
        'DiT paper Table 3', None)
for det, ap in (('cascade-mask-rcnn', 52.3), ('atss', 51.2), ('gfl', 51.3), ('sparse-rcnn', 51.3)):
    PAPER[f'{det}_dit-b2_*'] = ('Object Detection', 'COCO', {'box AP': ap}, 'DiT paper Table 2', None)
for b, miou in zip(range(1, 5), (45.0, 47.4, 48.7, 49.0)):
    PAPER[f'fpn_dit-b{b}_*_ade20k-*'] = ('Semantic Segmentation', 'ADE20K', {'mIoU': miou},
                                         'DiT paper Table 5', None)

TRAINING_DATA = {'mmpretrain': 'ImageNet-1k', 'mmdet': 'COCO'}


def paper_entry(name):
    """The paper's result for a config name (exact name first, then the first matching pattern)."""
    if name in PAPER:
        return PAPER[name]
    for pattern, entry in PAPER.items():
        if fnmatch.fnmatchcase(name, pattern):
            return entry
    return None


def find_configs(root=ROOT):
    """{(codebase, family): [config paths relative to root]} of every family folder on disk."""
    out = OrderedDict()
    for codebase in CODEBASES:
        for family in FAMILIES:
            folder = osp.join(root, 'configs', codebase, family)
            if not osp.isdir(folder):
                continue
            paths = []
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDED_DIRS and not d.startswith('.'))
                paths += [osp.relpath(osp.join(dirpath, f), root) for f in sorted(filenames) if f.endswith('.py')]
            if paths:
                out[(codebase, family)] = sorted(paths)
    return out


def training_data(codebase, path):
    if codebase in TRAINING_DATA:
        return TRAINING_DATA[codebase]
    return 'ADE20K' if 'ade20k' in path else 'Cityscapes'


# ------------------------------------------------------------------------------------------------------
# Measurement (dgmn_mm.analysis, as tools/analysis_tools/get_flops.py), with the cache
# ------------------------------------------------------------------------------------------------------
def model_key(path):
    """A hash of the config's merged ``model`` section, as JSON with sorted keys: moving blocks between
    ``_base_`` files (which changes the order of the merged dict, not its content) keeps the cached
    measurements."""
    from dgmn_mm.analysis import load_config
    model = load_config(osp.join(ROOT, path)).model
    text = json.dumps(model.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure(path, flops=True):
    """{'params', 'flops', 'shape'} of a config, by :func:`dgmn_mm.analysis.get_flops` (the counter of
    tools/analysis_tools/get_flops.py)."""
    import torch

    from dgmn_mm.analysis import build_model, get_flops, load_config
    if flops:
        try:
            res = get_flops(osp.join(ROOT, path))
            return dict(params=int(res['params']), flops=int(res['impl']), shape=list(res['input_shape'][-2:]))
        except Exception as e:  # a model the jit tracer cannot count: keep its parameters, no FLOPs
            print(f'  FLOPs of {path} failed ({type(e).__name__}: {e}); parameters only', flush=True)
    model = build_model(load_config(osp.join(ROOT, path)), init=False)
    with torch.no_grad():
        params = sum(p.numel() for p in model.parameters())
    return dict(params=int(params), flops=None, shape=None)


def load_cache():
    if osp.exists(CACHE):
        with open(CACHE) as f:
            return json.load(f)
    return {}


def save_cache(cache):
    tmp = CACHE + '.tmp'
    with open(tmp, 'w') as f:
        json.dump(cache, f, indent=1, sort_keys=True)
    os.replace(tmp, CACHE)


def stats_for(path, cache, flops=True, recompute=False):
    key = model_key(path)
    hit = cache.get(path)
    if hit and hit.get('key') == key and not recompute and (
            hit.get('flops') is not None or not flops or hit.get('flops_failed')):
        return hit
    print(f'measuring {path} ({"params + FLOPs" if flops else "params"})', flush=True)
    res = measure(path, flops=flops)
    if flops and res.get('flops') is None:
        res['flops_failed'] = True
    if not flops and hit and hit.get('key') == key:
        res.update(flops=hit.get('flops'), shape=hit.get('shape'))
    res['key'] = key
    cache[path] = res
    save_cache(cache)
    return res


# ------------------------------------------------------------------------------------------------------
# YAML
# ------------------------------------------------------------------------------------------------------
def model_entry(codebase, family, path, stats):
    name = osp.splitext(osp.basename(path))[0]
    meta = OrderedDict()
    meta['Training Data'] = training_data(codebase, path)
    meta['Parameters'] = stats['params']
    if stats.get('flops') is not None:
        meta['FLOPs'] = stats['flops']
        meta['FLOPs Input'] = 'x'.join(str(s) for s in stats['shape'])
    entry = OrderedDict([('Name', name), ('In Collection', collections(codebase, family)['Name']),
                         ('Config', path), ('Metadata', meta)])
    paper = paper_entry(name)
    if paper is not None:
        tasks, dataset, metrics, source, weights = paper
        if isinstance(tasks, str):
            tasks, metrics = [tasks], [metrics]
        entry['Results'] = [OrderedDict([('Task', t), ('Dataset', dataset), ('Metrics', m)])
                            for t, m in zip(tasks, metrics)]
        entry['Results Source'] = f'reported by the paper ({source}); not reproduced here'
        if weights:
            entry['Weights'] = weights
            entry['Converted From'] = OrderedDict([('Weights', weights), ('Code', OFFICIAL_CODE)])
    return entry


def to_yaml(obj):
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(OrderedDict, lambda d, data: d.represent_dict(data.items()))
    Dumper.add_representer(tuple, lambda d, data: d.represent_list(data))
    return yaml.dump(obj, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=120)


def wants_flops(path, flops):
    if flops in (True, 'all'):
        return True
    if flops == 'classifiers':
        return path.startswith('configs/mmpretrain/')
    return False


def generate(flops='all', recompute=False, only=None):
    cache = load_cache()
    found = find_configs()
    metafiles = []
    for (codebase, family), paths in found.items():
        models = []
        for path in paths:
            if only and not fnmatch.fnmatch(path, only):
                stats = stats_for(path, cache, flops=False)
            else:
                stats = stats_for(path, cache, flops=wants_flops(path, flops), recompute=recompute)
            models.append(model_entry(codebase, family, path, stats))
        doc = OrderedDict([('Collections', [collections(codebase, family)]), ('Models', models)])
        rel = osp.join('configs', codebase, family, 'metafile.yml')
        header = ('# Generated by tools/misc/gen_metafiles.py from the configs on disk; do not edit by hand.\n'
                  '# Parameters/FLOPs: tools/analysis_tools/get_flops.py (FLOPs = multiply-accumulates of this\n'
                  '# implementation at "FLOPs Input"). Results: the papers\' numbers (see "Results Source").\n')
        with open(osp.join(ROOT, rel), 'w') as f:
            f.write(header + to_yaml(doc))
        metafiles.append(rel)
    with open(osp.join(ROOT, 'model-index.yml'), 'w') as f:
        f.write('# Generated by tools/misc/gen_metafiles.py\n' + to_yaml(dict(Import=metafiles)))
    # drop cache entries of configs that are gone
    live = {p for paths in found.values() for p in paths}
    for stale in [k for k in cache if k not in live]:
        del cache[stale]
    save_cache(cache)
    return metafiles


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Generate configs/**/metafile.yml and model-index.yml')
    parser.add_argument('--flops', choices=['all', 'classifiers', 'none'], default='all',
                        help='which configs get their FLOPs measured (the others: parameters only; cached '
                        'FLOPs are kept)')
    parser.add_argument('--recompute', action='store_true', help='measure every config again')
    parser.add_argument('--only', help='measure only configs matching this glob (others from the cache)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine').setLevel(logging.ERROR)
    for f in generate(flops=args.flops, recompute=args.recompute, only=args.only):
        print(f)


if __name__ == '__main__':
    main()

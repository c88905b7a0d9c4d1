#!/usr/bin/env python
"""Convert an official DGMN2 ImageNet checkpoint (github:fudan-zvg/DGMN2) to dgmn_mm.

    python tools/model_converters/dgmn2_official_to_mm.py SRC DST [--arch tiny]

SRC may be a bare state dict or one wrapped in ``model`` (the official trainer's files) or
``state_dict``. DST is an mmengine checkpoint (``{'state_dict': ..., 'meta': ...}``) that loads with
``strict=True`` into the model of ``configs/mmpretrain/dgmn2/dgmn2-<arch>_8xb128_in1k.py`` (``backbone.*`` and
``head.fc.*``); detection and segmentation configs load its backbone part through
``init_cfg=dict(type='Pretrained', checkpoint=DST)``.

Every official key maps to exactly one of ours and every shape is checked against a DGMN2 of the detected
(or given) arch: a foreign or truncated checkpoint stops with the names of the missing and unexpected keys,
and nothing is written.
"""
import argparse
import os
import os.path as osp
import re
import sys
from collections import Counter

import torch


def load_official(path: str) -> dict:
    """torch.load with weights_only=True; the official trainer also pickles its argparse ``args``, which
    is allowed (and nothing else is)."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location='cpu', weights_only=True)


def detect_arch(state_dict: dict) -> str:
    from dgmn_mm.models.backbones.dgmn2 import DGMN2
    blocks = Counter()
    for key in state_dict:
        m = re.match(r'^block(\d)\.(\d+)\.norm1\.weight$', key)
        if m:
            blocks[int(m[1])] += 1
    depths = tuple(blocks.get(i, 0) for i in range(1, 5))
    for name in ('tiny', 'small', 'medium', 'large'):
        if DGMN2.arch_zoo[name]['depths'] == depths:
            return name
    raise KeyError(f'cannot tell the DGMN2 variant: the checkpoint has {depths} blocks per stage '
                   '(tiny (2, 2, 2, 2), small (3, 4, 6, 3), medium (3, 4, 18, 3), large (3, 8, 27, 3)); '
                   'is this an official DGMN2 checkpoint? Pass --arch to force one.')


def check_against_model(converted: dict, arch: str, num_classes: int, official_names: dict = None):
    """Compare keys and shapes with a freshly built DGMN2 classifier; raise naming every mismatch."""
    from dgmn_mm.models.backbones.dgmn2 import DGMN2
    backbone = DGMN2(arch=arch)
    expected = {f'backbone.{k}': tuple(v.shape) for k, v in backbone.state_dict().items()}
    expected['head.fc.weight'] = (num_classes, backbone.embed_dims[-1])
    expected['head.fc.bias'] = (num_classes, )
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(k for k in set(expected) & set(converted) if tuple(converted[k].shape) != expected[k])
    if missing or unexpected or wrong:
        def fmt(title, items, limit=200):
            lines = [f'  {item}' for item in items[:limit]] + ([f'  ... and {len(items) - limit} more']
                                                               if len(items) > limit else [])
            return [f'{title}: {len(items)}'] + lines
        official_names = official_names or {}
        unexpected = [f'{k} (official {official_names[k]})' if official_names.get(k, k) != k else k
                      for k in unexpected]
        shapes = [f'{k}: checkpoint {tuple(converted[k].shape)}, model {expected[k]}' for k in wrong]
        raise KeyError('\n'.join([f'the checkpoint does not fit DGMN2-{arch}'] + fmt('missing keys', missing)
                                  + fmt('unexpected keys', unexpected) + fmt('wrong shapes', shapes)))


def convert(src: str, dst: str, arch: str = None) -> dict:
    from dgmn_mm.models.backbones.dgmn2 import convert_official_state_dict, is_official_state_dict, \
        unwrap_checkpoint
    state_dict = unwrap_checkpoint(load_official(src))
    if not is_official_state_dict(state_dict):
        raise KeyError(f'{src} is not an official DGMN2 checkpoint: no patch_embed1.* / block1.* keys '
                       f'(first keys: {list(state_dict)[:5]})')
    arch = arch or detect_arch(state_dict)
    converted = convert_official_state_dict(state_dict, strict=False)  # unknown keys are reported below
    official_names = dict(zip(converted, state_dict))  # ours -> official (conversion keeps the order)
    if 'head.fc.weight' not in converted:
        raise KeyError(f'{src} has no classifier (head.weight / head.bias): it is not a full official '
                       'ImageNet checkpoint')
    check_against_model(converted, arch, converted['head.fc.weight'].shape[0], official_names)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    meta = dict(arch=arch, converted_from=osp.basename(src), converter='dgmn2_official_to_mm')
    tmp = dst + '.tmp'
    torch.save(dict(state_dict=converted, meta=meta), tmp)
    os.replace(tmp, dst)  # never leave a half-written DST behind
    return dict(arch=arch, num_tensors=len(converted),
                num_params=sum(v.numel() for k, v in converted.items() if not k.endswith('num_batches_tracked')
                               and 'running_' not in k))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official DGMN2 checkpoint (.pth)')
    parser.add_argument('dst', help='output path of the converted checkpoint')
    parser.add_argument('--arch', choices=['tiny', 'small', 'medium', 'large'], default=None,
                        help='variant (default: detected from the number of blocks)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if osp.abspath(args.src) == osp.abspath(args.dst):
        sys.exit('error: SRC and DST must differ')
    try:
        info = convert(args.src, args.dst, args.arch)
    except (KeyError, TypeError) as e:
        sys.exit(f'error: {e.args[0] if e.args else e}')
    print(f'converted DGMN2-{info["arch"]}: {info["num_tensors"]} tensors, '
          f'{info["num_params"]:,} parameters -> {args.dst}')


if __name__ == '__main__':
    main()

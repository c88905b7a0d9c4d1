#!/usr/bin/env python
"""Convert an official DGMN2 checkpoint (github:fudan-zvg/DGMN2) of any released kind to dgmn_mm.

    python tools/model_converters/dgmn2_official_to_mm.py SRC DST [--config CONFIG] [--arch tiny]

Kinds (told apart by their keys; ``--kind`` forces one): ImageNet classifiers (``classification/``), mmdet
2.12 RetinaNet / Mask R-CNN (``detection/``), mmseg 0.16 Semantic FPN / SETR (``segmentation/``),
Deformable DETR (``deformable_detr/``) and Sparse R-CNN (``sparsercnn/``). SRC may be a bare state dict or
one wrapped in ``model`` or ``state_dict``; it is read with ``weights_only=True``, so a file that would run
code is refused. DST is an mmengine checkpoint (``{'state_dict': ..., 'meta': ...}``) that loads with
``strict=True`` into the matching config under ``configs/`` (the family READMEs list them); with
``--config`` that is checked here, key by key and shape by shape, before anything is written.

Every failure prints one line ``error: <file>: <what is wrong>`` and exits with status 2; nothing is
written and no temporary file is left behind.
"""
import argparse
import os
import os.path as osp
import sys
import tempfile

import torch

SCOPES = {'imagenet': 'mmpretrain', 'mmdet': 'mmdet', 'deformable_detr': 'mmdet', 'sparse_rcnn': 'mmdet',
          'mmseg': 'mmseg'}


def _errors():
    from dgmn_mm.models.backbones.dgmn2_convert import CheckpointError
    return CheckpointError


def _shape_report(source, converted, expected, what):
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    wrong = sorted(f'{k} {tuple(converted[k].shape)} vs {expected[k]}' for k in set(expected) & set(converted)
                   if tuple(converted[k].shape) != tuple(expected[k]))
    if missing or unexpected or wrong:
        parts = [f'{len(v)} {n} [{", ".join(v[:4])}{" ..." if len(v) > 4 else ""}]'
                 for n, v in (('missing keys', missing), ('unexpected keys', unexpected), ('wrong shapes', wrong))
                 if v]
        raise _errors()(f'{source}: does not fit {what}: ' + '; '.join(parts))


def check_backbone(source, converted, arch=None):
    """The ``backbone.*`` part against a DGMN2 of the detected (or forced) arch; returns the arch."""
    from dgmn_mm.models.backbones.dgmn2 import DGMN2
    from dgmn_mm.models.backbones.dgmn2_convert import ARCH_DEPTHS, arch_of_depths, backbone_depths
    depths = backbone_depths(converted, 'backbone.')
    found = arch_of_depths(depths)
    if found is None:
        raise _errors()(f'{source}: cannot tell the DGMN2 variant: {depths} blocks per stage (tiny (2, 2, 2, 2), '
                        'small (3, 4, 6, 3), medium (3, 4, 18, 3), large (3, 8, 27, 3)); is the file truncated?')
    if arch is not None and arch != found:
        raise _errors()(f'{source}: holds DGMN2-{found} weights {ARCH_DEPTHS[found]}, not DGMN2-{arch} '
                        f'{ARCH_DEPTHS[arch]}')
    expected = {f'backbone.{k}': tuple(v.shape) for k, v in DGMN2(arch=found).state_dict().items()}
    _shape_report(source, {k: v for k, v in converted.items() if k.startswith('backbone.')}, expected,
                  f'DGMN2-{found}')
    return found


def check_config(source, converted, config, kind):
    """Build the model of ``config`` (no weights loaded) and compare every key and shape."""
    import importlib
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(config)
    scope = cfg.get('default_scope') or SCOPES[kind]
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        model = registry.build(cfg.model)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _shape_report(source, converted, expected, f'the model of {osp.basename(config)}')


def check_dst(dst):
    dst_dir = osp.dirname(osp.abspath(dst)) or '.'
    if osp.isdir(dst):
        raise _errors()(f'{dst}: is a directory; DST must be a file path')
    probe = dst_dir
    while not osp.exists(probe):
        probe = osp.dirname(probe)
    if not osp.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise _errors()(f'{dst}: cannot write there ({probe} is not a writable directory)')
    if osp.exists(dst) and not os.access(dst, os.W_OK):
        raise _errors()(f'{dst}: exists and is not writable')


def save_atomically(obj, dst):
    """Write to a temporary file next to DST, then rename: DST is complete or untouched."""
    dst_dir = osp.dirname(osp.abspath(dst))
    os.makedirs(dst_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + osp.basename(dst) + '.', suffix='.tmp', dir=dst_dir)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException as e:
        if osp.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError):
            raise _errors()(f'{dst}: cannot be written ({e.strerror or e})') from None
        raise


def convert(src: str, dst: str, arch: str = None, kind: str = None, config: str = None) -> dict:
    """Convert SRC to DST; returns a summary. Raises ``CheckpointError`` ('<file>: <what is wrong>')."""
    from dgmn_mm.models.backbones.dgmn2_convert import (convert_official_checkpoint, load_checkpoint_file,
                                                        unwrap_checkpoint)
    if osp.abspath(src) == osp.abspath(dst):
        raise _errors()(f'{dst}: SRC and DST must differ')
    check_dst(dst)
    state_dict = unwrap_checkpoint(load_checkpoint_file(src), src)
    kind, converted = convert_official_checkpoint(state_dict, kind=kind, source=src)
    found = check_backbone(src, converted, arch)
    if kind == 'imagenet' and 'head.fc.weight' not in converted:
        raise _errors()(f'{src}: has no classifier (head.weight / head.bias): not a full official ImageNet '
                        'checkpoint')
    if config is not None:
        check_config(src, converted, config, kind)
    meta = dict(arch=found, kind=kind, converted_from=osp.basename(src), converter='dgmn2_official_to_mm')
    save_atomically(dict(state_dict=converted, meta=meta), dst)
    return dict(arch=found, kind=kind, num_tensors=len(converted),
                num_params=sum(v.numel() for k, v in converted.items()
                               if not k.endswith('num_batches_tracked') and 'running_' not in k))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official DGMN2 checkpoint (.pth)')
    parser.add_argument('dst', help='output path of the converted checkpoint')
    parser.add_argument('--arch', choices=['tiny', 'small', 'medium', 'large'], default=None,
                        help='expected variant (default: detected from the number of blocks)')
    parser.add_argument('--kind', choices=['imagenet', 'mmdet', 'mmseg', 'deformable_detr', 'sparse_rcnn'],
                        default=None, help='official code base that wrote SRC (default: detected)')
    parser.add_argument('--config', default=None,
                        help='dgmn_mm config the result must load into strictly (checked before writing)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    CheckpointError = _errors()
    try:
        info = convert(args.src, args.dst, args.arch, args.kind, args.config)
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    print(f'converted {info["kind"]} DGMN2-{info["arch"]}: {info["num_tensors"]} tensors, '
          f'{info["num_params"]:,} parameters -> {args.dst}')


if __name__ == '__main__':
    main()

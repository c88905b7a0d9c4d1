"""Checks of a config's data before training starts, with errors that name the file and what is missing.

Without them a bad annotation file surfaces deep inside a codebase: mmdet's ``CocoDataset`` on a COCO file
with no images (or, with ``filter_empty_gt``, no annotations) fails with numpy's ``need at least one array to
concatenate``; a 0-byte file with a ``JSONDecodeError`` that names no file. :func:`check_data_cfg` walks
the train (and optionally val/test) datasets of a config, through dataset wrappers
(``RepeatDataset``, ``ClassBalancedDataset``, ``ConcatDataset`` ...), and checks:

- an ``ann_file`` exists, is not empty, parses (``.json``), and a COCO-style file (``images`` key) has at
  least one image and, for a training set, at least one annotation;
- a plain-text ``ann_file`` (ImageNet-style lists) has at least one non-empty line;
- without ``ann_file`` (folder datasets: mmpretrain ``CustomDataset``, mmseg ``BaseSegDataset``) the image
  folder exists and holds at least one file.

Nothing is patched: the codebases keep their own loading code, this only runs first.
"""
import json
import os
import os.path as osp
from typing import Iterator, List, Optional

__all__ = ['DataCheckError', 'check_data_cfg', 'check_dataset_cfg', 'iter_dataset_cfgs']


class DataCheckError(ValueError):
    """A dataset of the config cannot train: the message names the file or folder and what is missing."""


def iter_dataset_cfgs(dataset_cfg) -> Iterator[dict]:
    """The leaf dataset configs of ``dataset_cfg`` (wrappers with ``dataset``/``datasets`` are unwrapped)."""
    if dataset_cfg is None:
        return
    if isinstance(dataset_cfg, (list, tuple)):
        for d in dataset_cfg:
            yield from iter_dataset_cfgs(d)
        return
    if not isinstance(dataset_cfg, dict):  # an already built dataset object: nothing to check here
        return
    if 'datasets' in dataset_cfg:
        yield from iter_dataset_cfgs(dataset_cfg['datasets'])
    elif 'dataset' in dataset_cfg:
        yield from iter_dataset_cfgs(dataset_cfg['dataset'])
    else:
        yield dataset_cfg


def _join(root: Optional[str], path: str) -> str:
    if not path or osp.isabs(path) or '://' in path or not root:
        return path
    return osp.join(root, path)


def _image_folder(dataset_cfg: dict) -> Optional[str]:
    prefix = dataset_cfg.get('data_prefix', '')
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', prefix.get('img', prefix.get('img_prefix', '')))
    return _join(dataset_cfg.get('data_root'), prefix or '') or dataset_cfg.get('data_root')


def check_dataset_cfg(dataset_cfg: dict, split: str = 'train') -> None:
    """Check one (leaf) dataset config; raises :class:`DataCheckError` or ``FileNotFoundError``.

    Args:
        dataset_cfg (dict): a dataset config (``type``, ``data_root``, ``ann_file``, ``data_prefix`` ...).
        split (str): 'train', 'val' or 'test'; only a training set must have annotations.
    """
    dtype = str(dataset_cfg.get('type', ''))
    ann_file = dataset_cfg.get('ann_file', '')
    where = f'{split} dataset ({dtype})'
    if isinstance(ann_file, str) and ann_file:
        path = _join(dataset_cfg.get('data_root'), ann_file)
        if '://' in path:  # remote back-ends are not checked
            return
        if not osp.exists(path):
            raise FileNotFoundError(f'{where}: annotation file {path!r} does not exist')
        if osp.isdir(path):
            raise DataCheckError(f'{where}: annotation file {path!r} is a directory')
        if osp.getsize(path) == 0:
            raise DataCheckError(f'{where}: annotation file {path!r} is empty (0 bytes)')
        if path.endswith('.json'):
            try:
                with open(path, encoding='utf-8') as f:
                    content = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataCheckError(f'{where}: annotation file {path!r} is not valid JSON: {e}') from None
            _check_json(content, path, where, split, dtype)
        elif path.endswith(('.txt', '.csv', '.lst')):
            with open(path, encoding='utf-8', errors='replace') as f:
                if not any(line.strip() for line in f):
                    raise DataCheckError(f'{where}: annotation file {path!r} lists no images (only blank lines)')
        return
    folder = _image_folder(dataset_cfg)
    if not folder or '://' in folder:
        return
    if not osp.isdir(folder):
        raise FileNotFoundError(f'{where}: image folder {folder!r} does not exist (no ann_file is set)')
    for _, _, files in os.walk(folder, followlinks=True):
        if files:
            return
    raise DataCheckError(f'{where}: image folder {folder!r} holds no files: the set has no images')


def _check_json(content, path: str, where: str, split: str, dtype: str) -> None:
    if isinstance(content, dict) and ('images' in content or 'Coco' in dtype):
        images = content.get('images')
        if not isinstance(images, list) or not images:
            raise DataCheckError(f'{where}: annotation file {path!r} has no images ("images" is '
                                 f'{"missing" if images is None else "empty"})')
        annotations = content.get('annotations')
        if split == 'train' and (not isinstance(annotations, list) or not annotations):
            raise DataCheckError(f'{where}: annotation file {path!r} has no annotations ("annotations" is '
                                 f'{"missing" if annotations is None else "empty"}); a training set needs '
                                 f'at least one')
    elif isinstance(content, dict) and 'data_list' in content:  # mmengine's BaseDataset format
        if not content['data_list']:
            raise DataCheckError(f'{where}: annotation file {path!r} has an empty "data_list": no images')
    elif isinstance(content, (list, dict)) and not content:
        raise DataCheckError(f'{where}: annotation file {path!r} holds an empty {type(content).__name__}')


def check_data_cfg(cfg, splits=('train', )) -> List[dict]:
    """Check the datasets of ``cfg.<split>_dataloader`` for every split; returns the checked configs.

    Raises:
        FileNotFoundError / DataCheckError: naming the file or folder and what is missing.
    """
    checked = []
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for dataset_cfg in iter_dataset_cfgs(loader.get('dataset')):
            check_dataset_cfg(dataset_cfg, split)
            checked.append(dataset_cfg)
    return checked

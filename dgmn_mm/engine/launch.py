"""Codebase-aware helpers shared by ``tools/train.py`` and ``tools/test.py``.

A dgmn_mm config trains with mmpretrain, mmdet or mmseg. :func:`detect_codebase` finds which one from the
config (its ``default_scope``, else the ``mmdet::``/``mmseg::``/``mmpretrain::`` prefixes of its bases) and
:func:`init_codebase` runs that codebase's own ``register_all_modules(init_default_scope=True)``.
The ``apply_*`` functions implement the tools' ``--show``/``--show-dir``, ``--tta`` and ``--out`` flags with
each codebase's semantics. :func:`add_launch_args` / :func:`parse_launch_args` hold the flags both tools take
(as mmdet's ``tools/train.py`` and ``tools/test.py`` do: ``--cfg-options``, ``--launcher``, ``--local-rank``)
and :func:`load_tool_cfg` their common first steps (config, overrides, codebase, work directory).
"""
import argparse
import os
import os.path as osp
import re
import warnings
from copy import deepcopy
from types import SimpleNamespace
from typing import Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict, DictAction

__all__ = ['CODEBASES', 'detect_codebase', 'init_codebase', 'apply_show', 'apply_tta', 'apply_seg_out_dir',
           'add_dump_metric', 'add_launch_args', 'parse_launch_args', 'load_tool_cfg']

CODEBASES = ('mmpretrain', 'mmdet', 'mmseg')
_PREFIX = re.compile(r'\b(mmpretrain|mmdet|mmseg)::')


def _base_files(path: str):
    """The config file and its local ``_base_`` files, recursively (``pkg::`` bases are not followed)."""
    seen, todo = [], [osp.abspath(path)]
    while todo:
        current = todo.pop()
        if current in seen or not osp.isfile(current):
            continue
        seen.append(current)
        text = open(current, encoding='utf-8').read()
        match = re.search(r'^_base_\s*=\s*(.+?)(?=^\S|\Z)', text, flags=re.M | re.S)
        if match:
            for base in re.findall(r"['\"]([^'\"]+\.py)['\"]", match.group(1)):
                if '::' not in base:
                    todo.append(osp.join(osp.dirname(current), base))
    return seen


def detect_codebase(cfg: Config, config_path: Optional[str] = None) -> str:
    """Which of mmpretrain / mmdet / mmseg a config is for.

    1. ``cfg.default_scope`` if it is one of :data:`CODEBASES` (every upstream ``default_runtime`` sets it);
    2. else the first ``mmpretrain::``/``mmdet::``/``mmseg::`` prefix in the config file or its local bases.

    Raises:
        ValueError: if neither tells.
    """
    scope = cfg.get('default_scope')
    if scope in CODEBASES:
        return scope
    if config_path is not None:
        for path in _base_files(config_path):
            match = _PREFIX.search(open(path, encoding='utf-8').read())
            if match:
                return match.group(1)
    raise ValueError(f'cannot tell the codebase of {config_path or "the config"}: set default_scope to one of '
                     f'{CODEBASES} (e.g. --cfg-options default_scope=mmdet), or inherit an upstream base')


def init_codebase(cfg: Config, codebase: str) -> None:
    """Import dgmn_mm and run ``<codebase>.utils.register_all_modules(init_default_scope=True)``; a
    config without ``default_scope`` gets the codebase's."""
    import importlib

    import dgmn_mm  # noqa: F401  (registers DGMN2 & co., the safe globals and the CPU DDP wrapper)
    importlib.import_module(f'{codebase}.utils').register_all_modules(init_default_scope=True)
    if cfg.get('default_scope') is None:
        cfg.default_scope = codebase


def add_launch_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--cfg-options``, ``--launcher`` and ``--local-rank`` (the flags of mmdet's train.py and test.py
    that every dgmn_mm tool running a Runner takes) to ``parser``."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override some settings in the used config, the key-value pair in xxx=yyy format will be '
        'merged into config file. If the value to be overwritten is a list, it should be like key="[a,b]" '
        'or key=a,b It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" Note that the '
        'quotation marks are necessary and that no white space is allowed.')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_launch_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None):
    """``parser.parse_args(argv)``; ``LOCAL_RANK`` is set from ``--local-rank`` when the launcher did not set
    it (as mmdet's tools do)."""
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_tool_cfg(config: str, cfg_options: Optional[dict] = None,
                  work_dir: Optional[str] = None) -> Tuple[Config, str]:
    """The first steps of ``tools/train.py`` and ``tools/test.py``: load ``config``, merge ``--cfg-options``,
    find and initialise its codebase (:func:`detect_codebase`, :func:`init_codebase`) and set ``work_dir``
    (the ``--work-dir`` flag, else the config's, else ``./work_dirs/<config name>``).

    Returns:
        tuple[Config, str]: the config and the codebase name.
    """
    cfg = Config.fromfile(config)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    codebase = detect_codebase(cfg, config)
    init_codebase(cfg, codebase)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg, codebase


def apply_show(cfg: Config, codebase: str, show: bool, show_dir: Optional[str], wait_time: float) -> Config:
    """``--show``/``--show-dir``: turn on the codebase's ``VisualizationHook`` as its own test.py does."""
    if not (show or show_dir):
        return cfg
    if 'visualization' not in cfg.get('default_hooks', {}):
        raise RuntimeError("--show/--show-dir need default_hooks.visualization=dict(type='VisualizationHook')")
    if codebase == 'mmdet':
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        return trigger_visualization_hook(cfg, SimpleNamespace(show=show, show_dir=show_dir, wait_time=wait_time))
    hook = cfg.default_hooks.visualization
    if codebase == 'mmseg':
        hook.draw = True
        if show:
            hook.show, hook.wait_time = True, wait_time
        if show_dir:
            cfg.visualizer.save_dir = show_dir
    else:  # mmpretrain (its test.py's --interval defaults to 1: paint every sample)
        hook.enable, hook.show, hook.wait_time, hook.out_dir, hook.interval = True, show, wait_time, show_dir, 1
    return cfg


def _innermost_dataset(dataset_cfg):
    while 'dataset' in dataset_cfg:
        dataset_cfg = dataset_cfg['dataset']
    return dataset_cfg


def apply_tta(cfg: Config, codebase: str) -> Config:
    """``--tta``: wrap the model in ``cfg.tta_model`` and test with ``cfg.tta_pipeline``.

    Missing entries default as in each codebase's test.py: a flip TTA with ``DetTTAModel`` (mmdet) or
    ``AverageClsScoreTTA`` (mmpretrain); mmseg configs must define both (its ``default_runtime`` has
    ``tta_model``, its dataset bases ``tta_pipeline``).
    """
    if codebase == 'mmseg' and ('tta_model' not in cfg or 'tta_pipeline' not in cfg):
        raise RuntimeError('--tta with mmseg needs tta_model and tta_pipeline in the config')
    test_dataset = _innermost_dataset(cfg.test_dataloader.dataset)
    if 'tta_model' not in cfg:
        warnings.warn('no tta_model in the config, using the codebase default')
        cfg.tta_model = (dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5),
                                                                  max_per_img=100))
                         if codebase == 'mmdet' else dict(type='AverageClsScoreTTA'))
    if 'tta_pipeline' not in cfg:
        warnings.warn('no tta_pipeline in the config, using a horizontal-flip TTA of the test pipeline')
        pipeline = deepcopy(test_dataset.pipeline)
        pack = pipeline[-1]
        if codebase == 'mmdet':
            pack = dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                                                         'scale_factor', 'flip', 'flip_direction'))
        pipeline[-1] = dict(type='TestTimeAug', transforms=[
            [dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)], [pack]])
        cfg.tta_pipeline = pipeline
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    test_dataset.pipeline = cfg.tta_pipeline
    return cfg


def add_dump_metric(runner, cfg: Config, codebase: str, out: Optional[str]) -> None:
    """``--out``: dump the predictions to a pickle (``.pkl``/``.pickle``) for offline evaluation.

    mmdet uses ``DumpDetResults`` (masks encoded as RLE), the others mmengine's ``DumpResults``. For mmseg a
    path that is not a pickle is, as in mmseg's test.py, a directory for the predicted label maps; that case
    is a config change, handled by :func:`apply_seg_out_dir` before the runner is built.
    """
    if out is None or (codebase == 'mmseg' and not out.endswith(('.pkl', '.pickle'))):
        return
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl/.pickle file, got {out!r}')
    if codebase == 'mmdet':
        from mmdet.evaluation import DumpDetResults as Dump
    else:
        from mmengine.evaluator import DumpResults as Dump
    runner.test_evaluator.metrics.append(Dump(out_file_path=out))


def apply_seg_out_dir(cfg: Config, codebase: str, out: Optional[str]) -> Config:
    """mmseg's ``--out DIR``: the test evaluator writes the predicted label maps into ``DIR``."""
    if codebase == 'mmseg' and out is not None and not out.endswith(('.pkl', '.pickle')):
        cfg.test_evaluator['output_dir'] = out
        cfg.test_evaluator['keep_results'] = True
    return cfg

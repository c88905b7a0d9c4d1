"""Test (and evaluate) a dgmn_mm checkpoint with mmpretrain, mmdet or mmseg (picked from the config).

Same flags as mmdet's ``tools/test.py``::

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl] [--show] [--show-dir DIR]
                         [--wait-time S] [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}] [--tta]

``--out`` dumps the predictions to a pickle (for mmseg, a path without ``.pkl`` is a directory for the
predicted label maps, as in mmseg's own test.py). Checkpoints written by mmengine's Runner load with
``torch.load(weights_only=True)`` thanks to :mod:`dgmn_mm.engine.safe_load`.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # this checkout's dgmn_mm first

from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import dgmn_mm  # noqa: E402,F401  (registers models, the safe-load allow-list and the CPU DDP wrapper)
from dgmn_mm.engine import check_data_cfg, setup_distributed  # noqa: E402
from dgmn_mm.engine.launch import (add_dump_metric, add_launch_args, apply_seg_out_dir, apply_show,  # noqa: E402
                                   apply_tta, load_tool_cfg, parse_launch_args)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a dgmn_mm model (mmpretrain / mmdet / mmseg)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='dump predictions to a pickle file for offline evaluation (mmseg: a '
                        'non-.pkl path is a directory for the predicted label maps)')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images will be saved. If specified, it '
                        'will be automatically saved to the work_dir/timestamp/show_dir')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation (tta_model, tta_pipeline)')
    add_launch_args(parser)  # --cfg-options, --launcher, --local-rank
    return parse_launch_args(parser, argv)


def build_cfg(args):
    """(config with every flag applied, codebase name)."""
    # config + --cfg-options, codebase registered, work_dir: CLI > config > ./work_dirs/<config name>
    cfg, codebase = load_tool_cfg(args.config, args.cfg_options, args.work_dir)
    if args.out is not None and codebase != 'mmseg' and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl/.pickle file, got {args.out!r}')
    cfg.load_from = args.checkpoint
    cfg = apply_show(cfg, codebase, args.show, args.show_dir, args.wait_time)
    if args.tta:
        cfg = apply_tta(cfg, codebase)
    cfg = apply_seg_out_dir(cfg, codebase, args.out)
    return setup_distributed(cfg, args.launcher), codebase


def main(argv=None):
    args = parse_args(argv)
    cfg, codebase = build_cfg(args)
    check_data_cfg(cfg, splits=('test', ))  # a bad annotation file is named before anything is built
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    add_dump_metric(runner, cfg, codebase, args.out)
    return runner.test()


if __name__ == '__main__':
    main()

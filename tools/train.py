"""Train a dgmn_mm model with mmpretrain, mmdet or mmseg (picked from the config).

Same flags as mmdet's ``tools/train.py``. Runs on 1 CPU, 1 GPU, or under a launcher (``dist_train.sh``,
``slurm_train.sh``) on GPUs (nccl) or CPUs (gloo, see :func:`dgmn_mm.engine.setup_distributed`)::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # this checkout's dgmn_mm first

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import dgmn_mm  # noqa: E402,F401  (registers models, the safe-load allow-list and the CPU DDP wrapper)
from dgmn_mm.engine import check_data_cfg, setup_distributed  # noqa: E402
from dgmn_mm.engine.launch import add_launch_args, load_tool_cfg, parse_launch_args  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a dgmn_mm model (mmpretrain / mmdet / mmseg)')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False,
                        help='enable automatic-mixed-precision training (needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true', help='enable automatically scaling LR.')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='If specify checkpoint path, resume from it, while if not specify, try to auto resume from '
        'the latest checkpoint in the work directory.')
    add_launch_args(parser)  # --cfg-options, --launcher, --local-rank
    return parse_launch_args(parser, argv)


def build_cfg(args) -> Config:
    """The config with every command-line flag applied, ready for ``Runner.from_cfg``."""
    # config + --cfg-options, codebase registered, work_dir: CLI > config > ./work_dirs/<config name>
    cfg, _ = load_tool_cfg(args.config, args.cfg_options, args.work_dir)

    if args.amp:
        if not torch.cuda.is_available():
            raise RuntimeError('--amp needs a GPU: mmengine\'s AmpOptimWrapper does not run on CPU')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.auto_scale_lr:
        # mmdet configs carry auto_scale_lr.enable, mmpretrain ones only base_batch_size: accept both
        if 'auto_scale_lr' in cfg and 'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError('Can not find "auto_scale_lr" or "auto_scale_lr.base_batch_size" in your '
                               'configuration file.')

    # --resume CKPT resumes from CKPT, a bare --resume from the latest checkpoint of the work dir
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    # gloo + BN + a CPU-capable DDP wrapper without CUDA; nccl/SyncBN untouched with it
    return setup_distributed(cfg, args.launcher)


def main(argv=None):
    args = parse_args(argv)
    cfg = build_cfg(args)
    # missing/empty/unparsable annotation files and sets without images or annotations, named, before the
    # runner is built (the codebases would fail later with errors that name no file)
    check_data_cfg(cfg, splits=('train', 'val') if cfg.get('val_cfg') is not None else ('train', ))
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()

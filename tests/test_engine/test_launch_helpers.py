"""dgmn_mm.engine.launch: the flags and first steps that tools/train.py and tools/test.py share."""
import argparse
import os
import os.path as osp

import pytest

from dgmn_mm.engine.launch import add_launch_args, load_tool_cfg, parse_launch_args

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(REPO, 'tests', 'data', 'configs', 'dgmn2_tiny_cls_syncbn.py')


def test_launch_args_and_local_rank(monkeypatch):
    parser = add_launch_args(argparse.ArgumentParser())
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    args = parse_launch_args(parser, ['--cfg-options', 'a.b=3', 'c=[1,2]', '--launcher', 'pytorch',
                                      '--local-rank', '2'])
    assert args.cfg_options == {'a.b': 3, 'c': [1, 2]} and args.launcher == 'pytorch'
    assert os.environ['LOCAL_RANK'] == '2'
    # a launcher's LOCAL_RANK wins over the flag (torchrun sets it, and passes no flag)
    monkeypatch.setenv('LOCAL_RANK', '5')
    args = parse_launch_args(parser, ['--local_rank', '1'])
    assert args.launcher == 'none' and args.cfg_options is None and os.environ['LOCAL_RANK'] == '5'
    with pytest.raises(SystemExit):
        parse_launch_args(parser, ['--launcher', 'ssh'])


def test_load_tool_cfg_work_dir_precedence():
    cfg, codebase = load_tool_cfg(CONFIG)
    assert codebase == 'mmpretrain' and cfg.default_scope == 'mmpretrain'
    assert cfg.work_dir == osp.join('./work_dirs', 'dgmn2_tiny_cls_syncbn')  # no flag, none in the config
    cfg, _ = load_tool_cfg(CONFIG, {'work_dir': 'from_cfg', 'train_cfg.max_epochs': 7})
    assert cfg.work_dir == 'from_cfg' and cfg.train_cfg.max_epochs == 7  # --cfg-options merged first
    cfg, _ = load_tool_cfg(CONFIG, {'work_dir': 'from_cfg'}, work_dir='from_flag')
    assert cfg.work_dir == 'from_flag'

"""tools/: train.py -> test.py on its checkpoint -> dist_train.sh (2 gloo ranks on CPU) resuming from it.

The runs use ``tests/data/configs/dgmn2_tiny_cls_syncbn.py`` (an mmpretrain classifier with a tiny DGMN2, SyncBN
and ``dist_cfg.backend='nccl'`` on purpose) on a folder of random 32 x 32 images written into tmp_path.
"""
import argparse
import importlib.util
import os
import os.path as osp
import pickle
import socket
import subprocess
import sys

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(REPO, 'tools')
CONFIG = osp.join(REPO, 'tests', 'data', 'configs', 'dgmn2_tiny_cls_syncbn.py')
TIMEOUT = 600


def _data_options(root):
    return ['--cfg-options'] + [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]


def _run(cmd, **env):
    """Run a tool; return its combined output, failing the test with that output on a non-zero exit."""
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f'{" ".join(cmd)} exited with {proc.returncode}:\n{proc.stdout[-6000:]}'
    return proc.stdout


def _log_text(work_dir):
    """Text of every mmengine log file in the run sub-directories of ``work_dir``."""
    texts = []
    for sub in sorted(os.listdir(work_dir)):
        path = osp.join(work_dir, sub, f'{sub}.log')
        if osp.isfile(path):
            texts.append(open(path).read())
    return '\n'.join(texts)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory, make_image_folder):
    """ImageNet-style folders {train,val}/{a,b}/*.png: 4 training and 2 validation images of 32 x 32."""
    return make_image_folder(tmp_path_factory.mktemp('folder'), 32)


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
    """tools/train.py for one epoch (one process, CPU): (work_dir, checkpoint)."""
    work_dir = str(tmp_path_factory.mktemp('work'))
    out = _run([sys.executable, osp.join(TOOLS, 'train.py'), CONFIG, '--work-dir', work_dir,
                *_data_options(data_root)])
    assert 'No CUDA: 1 SyncBN norm config(s) replaced by BN' in out
    ckpt = osp.join(work_dir, 'epoch_1.pth')
    assert osp.isfile(ckpt), out[-3000:]
    return work_dir, ckpt


@pytest.mark.slow  # tools/train.py in a subprocess (module fixture)
def test_train_writes_a_weights_only_checkpoint(trained):
    work_dir, ckpt = trained
    log = _log_text(work_dir)
    assert 'Epoch(train) [1][2/2]' in log and 'accuracy/top1' in log
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert state['meta']['epoch'] == 1 and state['message_hub']['log_scalars']
    assert 'stages.0.patch_embed' in ''.join(state['state_dict'])


@pytest.mark.slow  # tools/train.py and tools/test.py in subprocesses
def test_test_tool_on_the_saved_checkpoint(trained, data_root, tmp_path):
    _, ckpt = trained
    out_file = str(tmp_path / 'preds.pkl')
    out = _run([sys.executable, osp.join(TOOLS, 'test.py'), CONFIG, ckpt, '--work-dir', str(tmp_path / 'test'),
                '--out', out_file, *_data_options(data_root)])
    assert f'Load checkpoint from {ckpt}' in out
    assert 'Epoch(test) [1/1]' in out and 'accuracy/top1' in out
    with open(out_file, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 2 and all('pred_score' in p for p in preds)


@pytest.mark.slow  # tools/dist_train.sh: two gloo ranks resume training
def test_dist_train_resumes_on_two_gloo_ranks(trained, data_root):
    """tools/dist_train.sh CONFIG 2 --resume: two CPU ranks (gloo) continue the single-process run."""
    work_dir, ckpt = trained
    out = _run(['bash', osp.join(TOOLS, 'dist_train.sh'), CONFIG, '2', '--work-dir', work_dir, '--resume',
                *_data_options(data_root), 'train_cfg.max_epochs=2'], PORT=str(_free_port()))
    assert out.count('No CUDA: 1 SyncBN norm config(s) replaced by GlooSyncBN') == 2  # once per rank
    log = _log_text(work_dir)
    assert 'Distributed training: True' in log and 'GPU number: 2' in log  # world size 2
    assert "dist_cfg: {'backend': 'gloo'}" in log and "type='DeviceAgnosticDDP'" in log
    assert f'Auto resumed from the latest checkpoint {ckpt}' in log and 'resumed epoch: 1, iter: 2' in log
    assert 'Epoch(train) [2][1/1]' in log  # 4 images, batch 2, 2 ranks: one iteration per rank
    assert log.count('accuracy/top1') >= 2
    state = torch.load(osp.join(work_dir, 'epoch_2.pth'), map_location='cpu', weights_only=True)
    assert state['meta']['epoch'] == 2 and state['meta']['iter'] == 3


# ------------------------------------------------------------------------------------------------------
# flags and launch scripts (no training)
# ------------------------------------------------------------------------------------------------------
def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _option_strings(parse_args, argv, monkeypatch):
    """Option strings of the parser that ``parse_args`` builds (captured when it parses ``argv``)."""
    captured = {}
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured['options'] = set(self._option_string_actions)
        return original(self, argv, namespace)

    monkeypatch.setattr(argparse.ArgumentParser, 'parse_args', capture)
    monkeypatch.setattr(sys, 'argv', ['prog', *argv])
    parse_args()
    return captured['options']


@pytest.mark.parametrize('tool,argv', [('train', ['cfg.py']), ('test', ['cfg.py', 'ckpt.pth'])])
def test_flags_cover_mmdets_tools(tool, argv, monkeypatch):
    import mmdet
    upstream = _load(osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', f'{tool}.py'), f'mmdet_{tool}')
    ours = _load(osp.join(TOOLS, f'{tool}.py'), f'dgmn_{tool}')
    theirs = _option_strings(upstream.parse_args, argv, monkeypatch)
    mine = _option_strings(ours.parse_args, argv, monkeypatch)
    assert theirs <= mine, theirs - mine
    monkeypatch.undo()
    args = ours.parse_args([*argv, '--resume'] if tool == 'train' else [*argv, '--tta', '--show-dir', 'x'])
    assert (args.resume == 'auto') if tool == 'train' else (args.tta and args.show_dir == 'x')


def _stub(tmp_path, name):
    """An executable ``name`` that records its arguments, one per line, into ``<tmp_path>/<name>.args``."""
    path = tmp_path / name
    path.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {tmp_path}/{name}.args\n')
    path.chmod(0o755)
    return str(path)


def test_dist_scripts_pass_torchrun_options(tmp_path):
    python = _stub(tmp_path, 'python')
    env = dict(PYTHON=python, NNODES='2', NODE_RANK='1', PORT='1234', MASTER_ADDR='10.0.0.1')
    _run(['bash', osp.join(TOOLS, 'dist_test.sh'), 'c.py', 'k.pth', '8', '--out', 'r s.pkl'], **env)
    assert (tmp_path / 'python.args').read_text().splitlines() == [
        '-m', 'torch.distributed.run', '--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.1',
        '--nproc_per_node=8', '--master_port=1234', osp.join(TOOLS, 'test.py'), 'c.py', 'k.pth', '--launcher',
        'pytorch', '--out', 'r s.pkl']
    _run(['bash', osp.join(TOOLS, 'dist_train.sh'), 'c.py', '4', '--amp'], PYTHON=python)
    args = (tmp_path / 'python.args').read_text().splitlines()
    assert args[2:7] == ['--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1', '--nproc_per_node=4',
                         '--master_port=29500']
    assert args[7:] == [osp.join(TOOLS, 'train.py'), 'c.py', '--launcher', 'pytorch', '--amp']


def test_slurm_scripts_pass_srun_options(tmp_path):
    _stub(tmp_path, 'srun')
    env = dict(PATH=f'{tmp_path}:{os.environ["PATH"]}', GPUS='16', GPUS_PER_NODE='4', CPUS_PER_TASK='3',
               SRUN_ARGS='--quotatype=auto')
    _run(['bash', osp.join(TOOLS, 'slurm_train.sh'), 'part', 'job', 'c.py', 'wd', '--amp'], **env)
    args = (tmp_path / 'srun.args').read_text().splitlines()
    venv_python = osp.join(REPO, '.venv', 'bin', 'python')
    assert args == ['-p', 'part', '--job-name=job', '--gres=gpu:4', '--ntasks=16', '--ntasks-per-node=4',
                    '--cpus-per-task=3', '--kill-on-bad-exit=1', '--quotatype=auto',
                    venv_python if osp.exists(venv_python) else 'python', '-u', osp.join(TOOLS, 'train.py'),
                    'c.py', '--work-dir=wd', '--launcher=slurm', '--amp']
    _run(['bash', osp.join(TOOLS, 'slurm_test.sh'), 'part', 'job', 'c.py', 'k.pth', '--tta'], **env)
    args = (tmp_path / 'srun.args').read_text().splitlines()
    assert args[-5:] == [osp.join(TOOLS, 'test.py'), 'c.py', 'k.pth', '--launcher=slurm', '--tta']


def test_scripts_keep_paths_with_spaces(tmp_path):
    """Every path reaches the tool as one argument: config, checkpoint and work dir with spaces."""
    python = _stub(tmp_path, 'python')
    cfg, ckpt, work = 'my configs/a b.py', 'ck pts/e 1.pth', 'work dirs/w d'
    _run(['bash', osp.join(TOOLS, 'dist_train.sh'), cfg, '1', '--work-dir', work], PYTHON=python)
    assert (tmp_path / 'python.args').read_text().splitlines()[-6:] == [
        osp.join(TOOLS, 'train.py'), cfg, '--launcher', 'pytorch', '--work-dir', work]
    _run(['bash', osp.join(TOOLS, 'dist_test.sh'), cfg, ckpt, '1', '--work-dir', work], PYTHON=python)
    assert (tmp_path / 'python.args').read_text().splitlines()[-7:] == [
        osp.join(TOOLS, 'test.py'), cfg, ckpt, '--launcher', 'pytorch', '--work-dir', work]
    _stub(tmp_path, 'srun')
    env = dict(PATH=f'{tmp_path}:{os.environ["PATH"]}', PYTHON='/opt/my python/bin/python', GRES='',
               SRUN_ARGS='--time=5 --quiet')
    _run(['bash', osp.join(TOOLS, 'slurm_train.sh'), 'part', 'my job', cfg, work, '--amp'], **env)
    args = (tmp_path / 'srun.args').read_text().splitlines()
    assert '--job-name=my job' in args and not any(a.startswith('--gres') for a in args)
    assert args[-7:] == ['/opt/my python/bin/python', '-u', osp.join(TOOLS, 'train.py'), cfg, f'--work-dir={work}',
                         '--launcher=slurm', '--amp']
    assert '--time=5' in args and '--quiet' in args
    _run(['bash', osp.join(TOOLS, 'slurm_test.sh'), 'part', 'my job', cfg, ckpt], **env)
    assert (tmp_path / 'srun.args').read_text().splitlines()[-4:] == [osp.join(TOOLS, 'test.py'), cfg, ckpt,
                                                                       '--launcher=slurm']


@pytest.mark.slow
def test_dist_train_one_gloo_process_with_spaces(data_root, tmp_path):
    """tools/dist_train.sh for real, 1 process on CPU (gloo), config and work dir paths with spaces."""
    import shutil
    cfg = tmp_path / 'my configs' / 'tiny cls.py'
    cfg.parent.mkdir()
    shutil.copy(CONFIG, cfg)
    work_dir = tmp_path / 'work dir'
    out = _run(['bash', osp.join(TOOLS, 'dist_train.sh'), str(cfg), '1', '--work-dir', str(work_dir),
                *_data_options(data_root)], PORT=str(_free_port()))
    assert 'No CUDA: 1 SyncBN norm config(s) replaced by GlooSyncBN' in out
    assert "dist_cfg: {'backend': 'gloo'}" in _log_text(str(work_dir))
    assert torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=True)['meta']['epoch'] == 1

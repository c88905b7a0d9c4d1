"""Crash-safe checkpoints (dgmn_mm.engine.AtomicCheckpointHook).

Each case trains a tiny model with mmengine's Runner in a forked child that SIGKILLs itself at a chosen
point of the save of ``iter_4.pth`` (mid-write included), then resumes in a second child with a bare
auto-resume (``resume=True``, no ``load_from``) and checks that training finishes and that the final
weights equal those of an uninterrupted run. The same kill with mmengine's plain ``CheckpointHook`` is
shown to lose the run (so the harness can tell the two apart).
"""
import multiprocessing as mp
import os
import os.path as osp
import signal

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from dgmn_mm.engine import AtomicCheckpointHook, find_resumable_checkpoint, is_complete_checkpoint

MAX_ITERS = 6
KILL_STEP = 'iter_4.pth'


class _Toy(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.out = nn.Linear(3, 2)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.out(self.bn(self.linear(inputs)).relu())
        if mode == 'loss':
            return dict(loss=((out - labels) ** 2).mean())
        return out


class _Data(Dataset):

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(32, 4, generator=g), torch.randn(32, 2, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


def _train(work_dir, hook_type, keep, resume, name):
    from mmengine.runner import Runner
    torch.manual_seed(0)
    runner = Runner(
        model=_Toy(), work_dir=work_dir, experiment_name=name, log_level='ERROR',
        train_dataloader=dict(dataset=_Data(), sampler=dict(type='DefaultSampler', shuffle=True), batch_size=4,
                              num_workers=0, collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        train_cfg=dict(by_epoch=False, max_iters=MAX_ITERS),
        default_hooks=dict(checkpoint=dict(type=hook_type, by_epoch=False, interval=2, max_keep_ckpts=keep),
                           logger=dict(type='LoggerHook', interval=100)),
        resume=resume, randomness=dict(seed=0), default_scope=None)
    runner.train()


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(point):
    """Patch the child so that it SIGKILLs itself at ``point`` of the save of ``iter_4.pth``."""
    from mmengine.fileio import LocalBackend
    real_put, real_replace, real_remove, real_commit = (
        LocalBackend.put, os.replace, os.remove, AtomicCheckpointHook._commit)

    def put(self, obj, filepath):
        if KILL_STEP in str(filepath) and point == 'mid_write':
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
            _die()
        return real_put(self, obj, filepath)

    def replace(src, dst):
        if str(dst).endswith(KILL_STEP) and point == 'before_rename':
            _die()
        if str(dst).endswith('last_checkpoint') and point == 'before_last_checkpoint_rename' and \
                KILL_STEP in open(src).read():
            _die()
        real_replace(src, dst)
        if str(dst).endswith(KILL_STEP) and point == 'after_rename':
            _die()

    def remove(path):
        if point == 'before_remove':
            _die()
        real_remove(path)
        if point == 'after_remove':
            _die()

    def commit(tmp_path, final_path):
        if final_path.endswith(KILL_STEP) and point == 'before_fsync':
            _die()
        return real_commit(tmp_path, final_path)

    LocalBackend.put = put
    os.replace = replace
    os.remove = remove
    AtomicCheckpointHook._commit = staticmethod(commit)


def _child(work_dir, hook_type, keep, resume, name, point):
    try:
        torch.set_num_threads(1)
        if point is not None:
            _install_kill(point)
        _train(work_dir, hook_type, keep, resume, name)
    except BaseException as e:  # noqa: B036  (report any failure through the exit code)
        with open(osp.join(work_dir, 'child_error.txt'), 'w') as f:
            f.write(repr(e))
        os._exit(3)
    os._exit(0)


def _run(work_dir, hook_type='AtomicCheckpointHook', keep=1, resume=False, point=None):
    ctx = mp.get_context('fork')
    proc = ctx.Process(target=_child, args=(str(work_dir), hook_type, keep, resume,
                                            f'{osp.basename(work_dir)}_{resume}_{point}', point))
    proc.start()
    proc.join(300)
    return proc.exitcode


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('straight')
    assert _run(work_dir) == 0
    return _weights(osp.join(work_dir, f'iter_{MAX_ITERS}.pth'))


def _assert_same(state, reference):
    assert state.keys() == reference.keys()
    for key in reference:
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=1e-6, msg=key)


KILL_POINTS = ['mid_write', 'before_fsync', 'before_rename', 'after_rename', 'before_last_checkpoint_rename',
               'before_remove', 'after_remove']


@pytest.mark.parametrize('point, keep', [(p, 1) for p in KILL_POINTS] + [  # no keep limit: nothing is removed
    (p, -1) for p in KILL_POINTS if p not in ('before_remove', 'after_remove')])
def test_kill_during_save_then_resume_equals_straight_run(tmp_path, reference, point, keep):
    assert _run(tmp_path, keep=keep, point=point) == -signal.SIGKILL  # the kill point was reached
    # every checkpoint under its final name is complete, whatever the kill point
    for name in os.listdir(tmp_path):
        if name.endswith('.pth'):
            assert is_complete_checkpoint(osp.join(tmp_path, name)), name
    assert _run(tmp_path, keep=keep, resume=True) == 0, open(tmp_path / 'child_error.txt').read()
    _assert_same(_weights(osp.join(tmp_path, f'iter_{MAX_ITERS}.pth')), reference)
    if keep == 1:
        assert sorted(n for n in os.listdir(tmp_path) if n.endswith('.pth')) == [f'iter_{MAX_ITERS}.pth']
    assert not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]


def test_plain_checkpoint_hook_loses_the_run(tmp_path):
    """The failure the hook fixes: mmengine's hook deletes iter_2 first and writes iter_4 in place."""
    assert _run(tmp_path, hook_type='CheckpointHook', keep=1, point='mid_write') == -signal.SIGKILL
    assert not osp.exists(tmp_path / 'iter_2.pth')
    assert not is_complete_checkpoint(str(tmp_path / 'iter_4.pth'))
    assert _run(tmp_path, hook_type='CheckpointHook', keep=1, resume=True) == 3
    assert 'FileNotFoundError' in open(tmp_path / 'child_error.txt').read()


def test_corrupt_latest_checkpoint_is_skipped(tmp_path, reference):
    """A latest checkpoint damaged after the fact (here truncated) is skipped for the newest good one."""
    assert _run(tmp_path, keep=-1) == 0
    for name, cut in (('iter_6.pth', 100), ('iter_4.pth', 1000)):
        path = tmp_path / name
        data = path.read_bytes()
        path.write_bytes(data[:cut])
        assert not is_complete_checkpoint(str(path))
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    assert _run(tmp_path, keep=-1, resume=True) == 0, open(tmp_path / 'child_error.txt').read()
    _assert_same(_weights(tmp_path / f'iter_{MAX_ITERS}.pth'), reference)


def test_bit_flip_is_detected(tmp_path):
    path = tmp_path / 'x.pth'
    torch.save(dict(w=torch.arange(1000.)), path)
    assert is_complete_checkpoint(str(path))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not is_complete_checkpoint(str(path))
    assert not is_complete_checkpoint(str(tmp_path / 'missing.pth'))
    (tmp_path / 'empty.pth').write_bytes(b'')
    assert not is_complete_checkpoint(str(tmp_path / 'empty.pth'))


def test_missing_last_checkpoint_file_resumes_from_newest(tmp_path, reference):
    """Killed after the first rename but before ``last_checkpoint`` existed: the file is still found."""
    assert _run(tmp_path, keep=-1) == 0
    os.remove(tmp_path / 'last_checkpoint')
    for name in ('iter_6.pth', 'iter_4.pth'):
        os.remove(tmp_path / name)
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    assert _run(tmp_path, keep=-1, resume=True) == 0, open(tmp_path / 'child_error.txt').read()
    _assert_same(_weights(tmp_path / f'iter_{MAX_ITERS}.pth'), reference)


@pytest.mark.slow  # resolves ~75 configs with their upstream bases: 30-150 s on 2 busy cores
def test_every_config_uses_the_atomic_hook():
    """Every shipped config (and the test configs) saves checkpoints with AtomicCheckpointHook."""
    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    paths = []
    for folder in ('configs', osp.join('tests', 'data', 'configs')):
        for dirpath, _, names in os.walk(osp.join(root, folder)):
            if '_base_' not in osp.relpath(dirpath, root).split(os.sep):  # shared blocks, not configs
                paths += [osp.join(dirpath, n) for n in names if n.endswith('.py')]
    assert len(paths) > 50
    wrong, unloadable = {}, {}
    for path in sorted(paths):
        try:
            cfg = Config.fromfile(path)
        except FileNotFoundError as e:  # a missing upstream base is the config tests' business
            unloadable[osp.relpath(path, root)] = str(e)
            continue
        hook = cfg.get('default_hooks', {}).get('checkpoint', {})
        if hook.get('type') != 'AtomicCheckpointHook':
            wrong[osp.relpath(path, root)] = hook.get('type')
    assert not wrong, wrong
    assert len(unloadable) < 3, unloadable
    if unloadable:
        import warnings
        warnings.warn(f'configs that do not load: {unloadable}')


# ------------------------------------------------------------------------------------------------------
# end to end: tools/train.py killed while it writes a checkpoint, then tools/train.py --resume
# ------------------------------------------------------------------------------------------------------
_KILLER = '''
import os, runpy, signal, sys
from mmengine.fileio import LocalBackend
real_put = LocalBackend.put
def put(self, obj, filepath):
    if os.path.basename(str(filepath)).lstrip('.').startswith(os.environ['KILL_FILE']):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return real_put(self, obj, filepath)
LocalBackend.put = put
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
'''


@pytest.mark.slow
def test_train_tool_killed_mid_save_resumes_exactly(tmp_path):
    """The demo configs' setting (max_keep_ckpts=1): kill -9 while epoch_2.pth is written, --resume, equal
    weights to the uninterrupted 3 epochs."""
    import subprocess
    import sys

    import cv2
    import numpy as np
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    config = osp.join(root, 'tests', 'data', 'configs', 'dgmn2_tiny_cls_syncbn.py')
    data = tmp_path / 'data'
    rng = np.random.default_rng(0)
    for split in ('train', 'val'):
        for cls in ('a', 'b'):
            os.makedirs(data / split / cls)
            for i in range(2):
                cv2.imwrite(str(data / split / cls / f'{i}.png'), rng.integers(0, 256, (40, 40, 3), np.uint8))
    options = ['--cfg-options', *[f'{s}_dataloader.dataset.data_root={data}' for s in ('train', 'val', 'test')],
               'train_dataloader.dataset.pipeline.1.prob=0.0', 'train_cfg.max_epochs=3',
               'default_hooks.checkpoint.max_keep_ckpts=1']
    train = osp.join(root, 'tools', 'train.py')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'KILL_FILE': 'epoch_2.pth'}

    def run(*args, kill=False):
        cmd = [sys.executable, *(['-c', _KILLER] if kill else []), train, config, *args, *options]
        return subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=900)

    straight, crashed = str(tmp_path / 'straight'), str(tmp_path / 'crashed')
    assert run('--work-dir', straight).returncode == 0
    proc = run('--work-dir', crashed, kill=True)
    assert proc.returncode == -signal.SIGKILL, proc.stdout[-3000:]
    assert sorted(n for n in os.listdir(crashed) if n.endswith('.pth')) == ['epoch_1.pth']  # complete, kept
    proc = run('--work-dir', crashed, '--resume')
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert 'Auto resumed from the latest checkpoint' in proc.stdout and 'epoch_1.pth' in proc.stdout
    _assert_same(_weights(osp.join(crashed, 'epoch_3.pth')), _weights(osp.join(straight, 'epoch_3.pth')))
    assert sorted(n for n in os.listdir(crashed) if n.endswith('.pth')) == ['epoch_3.pth']

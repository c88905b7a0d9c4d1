"""Distributed semantics on CPU: the gloo SyncBN, 2 processes x B == 1 process x 2B, multi-node and Slurm.

- :class:`GlooSyncBatchNorm` under DDP with 2 gloo processes of B images equals one process with the 2B
  images and plain BN (losses, weights and running statistics to 1e-5); per-process BN does not.
- ``tools/dist_train.sh`` with the SyncBN test config: 2 processes x 2 images == ``tools/train.py`` with
  1 process x 4 images (slow).
- ``tools/dist_train.sh`` with ``NNODES=2`` (two torchrun "nodes" on localhost) == one node with 2
  processes (slow).
- ``tools/slurm_train.sh`` under a real Slurm on localhost (``tools/slurm/start_local_slurm.sh``); skipped
  when Slurm is not installed (slow).
"""
import multiprocessing as mp
import os
import os.path as osp
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from dgmn_mm.engine import GlooSyncBatchNorm, convert_to_gloo_sync_bn
from dgmn_mm.models.backbones.dgmn2 import DGMN2

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOLS = osp.join(REPO, 'tools')
CONFIG = osp.join(REPO, 'tests', 'data', 'configs', 'dgmn2_tiny_cls_syncbn.py')
TINY = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64), num_heads=(1, 1, 1, 2), mlp_ratios=(2, 2, 2, 2))
B, STEPS = 2, 3


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class _Net(nn.Module):
    """DGMN2 (BN in its patch embeddings, as the shipped SyncBN configs) + a BN head + a linear classifier."""

    def __init__(self, norm_type):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = DGMN2(arch=TINY, out_indices=(3, ), norm_cfg=dict(type=norm_type, requires_grad=True))
        self.head_norm = nn.BatchNorm1d(64) if norm_type == 'BN' else GlooSyncBatchNorm(64)
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(self.head_norm(self.backbone(x)[0].mean((2, 3))))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, 2 * B, 3, 40, 40, generator=g) * 2 + 1, torch.randint(0, 3, (STEPS, 2 * B),
                                                                                   generator=g)


def _train(model, xs, ys, rank=0, world=1):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for x, y in zip(xs, ys):
        x, y = x[rank * len(x) // world:(rank + 1) * len(x) // world], y[rank * len(y) // world:(rank + 1) *
                                                                          len(y) // world]
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    return torch.stack(losses)


def _gloo_worker(body, rank, world, port, out, *args):
    """Process target: join a gloo group of ``world`` processes and save ``body(rank, world, *args)`` to
    ``<out>.<rank>``; an exception goes to ``<out>.<rank>.err`` (exit code 3)."""
    import torch.distributed as dist
    try:
        torch.set_num_threads(1)
        dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
        torch.save(body(rank, world, *args), f'{out}.{rank}')
        dist.destroy_process_group()
    except BaseException as e:  # noqa: B036
        open(f'{out}.{rank}.err', 'w').write(repr(e))
        os._exit(3)
    os._exit(0)


def _spawn_two(body, out, *args):
    """``body(rank, 2, *args)`` in two spawned gloo processes: what each rank returned, or the test fails
    with the workers' errors."""
    ctx, port = mp.get_context('spawn'), _free_port()
    procs = [ctx.Process(target=_gloo_worker, args=(body, r, 2, port, out, *args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
    errors = [open(f'{out}.{r}.err').read() for r in range(2) if osp.exists(f'{out}.{r}.err')]
    assert all(p.exitcode == 0 for p in procs), errors
    return [torch.load(f'{out}.{r}', weights_only=True) for r in range(2)]


def _ddp_body(rank, world, norm_type):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    model = DDP(_Net(norm_type).train())
    xs, ys = _data()
    losses = _train(model, xs, ys, rank, world)
    dist.all_reduce(losses)
    return dict(losses=losses / world, state=model.module.state_dict())


def _two_processes(tmp_path, norm_type):
    return _spawn_two(_ddp_body, str(tmp_path / f'{norm_type}'), norm_type)


@pytest.fixture(scope='module')
def single_process():
    torch.set_num_threads(1)
    model = _Net('BN').train()
    xs, ys = _data()
    return dict(losses=_train(model, xs, ys), state=model.state_dict())


def _max_diff(a, b):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.fixture(scope='module')
def rounding_floor():
    """Per weight, how far one process's training moves it when the input moves by one rounding step
    (x * (1 + 2**-23)): the forward has kinks (bilinear sampling at integer positions, ReLU), and a change in
    the last bit moves the stem's weights by ~3e-4 after 3 SGD steps (measured, with either attention
    backend); the other weights move by < 1e-5. A distributed run can only be expected to agree to this floor."""
    torch.set_num_threads(1)
    xs, ys = _data()
    states = []
    for scale in (1.0, 1.0 + 2**-23):
        model = _Net('BN').train()
        _train(model, xs * scale, ys)
        states.append(model.state_dict())
    return {k: (states[0][k].double() - states[1][k].double()).abs().max().item()
            for k in states[0] if states[0][k].is_floating_point()}


@pytest.mark.slow  # a distributed run: two spawned gloo processes
def test_gloo_sync_bn_two_processes_equal_one_process(tmp_path, single_process, rounding_floor):
    ranks = _two_processes(tmp_path, 'GlooSyncBN')
    state = single_process['state']
    for r in ranks:
        assert r['state'].keys() == state.keys()  # same keys as BN / SyncBN
        torch.testing.assert_close(r['losses'], single_process['losses'], rtol=0, atol=1e-5)
        # weights and running statistics: 1e-5, or 3x the rounding floor where one process alone moves more
        far = {k: d for k in state if state[k].is_floating_point()
               for d in [(r['state'][k].double() - state[k].double()).abs().max().item()]
               if d > max(1e-5, 3 * rounding_floor[k])}
        assert not far, far
    assert sum(d > 1e-5 for d in rounding_floor.values()) <= 8  # the floor is the stem's, not everywhere
    assert int(ranks[0]['state']['head_norm.num_batches_tracked']) == STEPS


@pytest.mark.slow  # a distributed run: two spawned gloo processes
def test_per_process_bn_differs(tmp_path, single_process):
    """The control: per-process BN (the former CPU fallback) does not train like one process with 2B."""
    ranks = _two_processes(tmp_path, 'BN')
    assert (ranks[0]['losses'] - single_process['losses']).abs().max() > 1e-3


def test_gloo_sync_bn_without_process_group_is_bn():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, momentum=None)
    sync = convert_to_gloo_sync_bn(nn.Sequential(nn.BatchNorm2d(4, momentum=None)))[0]
    assert isinstance(sync, GlooSyncBatchNorm)
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(sync(x), bn(x))
    torch.testing.assert_close(sync.running_var, bn.running_var)
    sync.eval(), bn.eval()
    torch.testing.assert_close(sync(x), bn(x))
    with pytest.raises(ValueError, match=r'expects an input of shape \(B, C, \*\)'):
        sync(torch.randn(4))


# ------------------------------------------------------------------------------------------------------
# the tools, for real (slow)
# ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def data_root(tmp_path_factory, make_image_folder):
    """ImageNet-style folders {train,val}/{a,b}/*.png (4 training, 2 validation images of 40 x 40). No space
    in this path: mmengine's ``--cfg-options`` parser deletes spaces from values."""
    return make_image_folder(tmp_path_factory.mktemp('data') / 'tiny', 40)


def _options(root, batch):
    # no random flip, no shuffling: 2 ranks x 2 images see exactly the 4 images of 1 process x 4
    return ['--cfg-options', *[f'{s}_dataloader.dataset.data_root={root}' for s in ('train', 'val', 'test')],
            f'train_dataloader.batch_size={batch}', 'train_dataloader.sampler.shuffle=False',
            'train_dataloader.dataset.pipeline.1.prob=0.0', 'train_cfg.max_epochs=3', 'train_cfg.val_interval=3',
            'optim_wrapper.optimizer.type=SGD', 'optim_wrapper.optimizer.lr=0.05',
            'optim_wrapper.optimizer.weight_decay=0.0']


def _run(cmd, **env):
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1', **env},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
    assert proc.returncode == 0, f'{cmd} exited with {proc.returncode}:\n{proc.stdout[-6000:]}'
    return proc.stdout


def _final_state(work_dir):
    return torch.load(osp.join(work_dir, 'epoch_3.pth'), map_location='cpu', weights_only=True)['state_dict']


@pytest.fixture(scope='module')
def spaced_config(tmp_path_factory):
    """The SyncBN test config copied to a path with spaces."""
    folder = tmp_path_factory.mktemp('cfg') / 'my configs'
    folder.mkdir()
    path = folder / 'tiny cls syncbn.py'
    shutil.copy(CONFIG, path)
    return str(path)


@pytest.fixture(scope='module')
def one_process(data_root, spaced_config, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('one') / 'work dir')
    _run([sys.executable, osp.join(TOOLS, 'train.py'), spaced_config, '--work-dir', work_dir,
          *_options(data_root, 4)])
    return _final_state(work_dir)


@pytest.fixture(scope='module')
def two_processes(data_root, spaced_config, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('two') / 'work dir')
    out = _run(['bash', osp.join(TOOLS, 'dist_train.sh'), spaced_config, '2', '--work-dir', work_dir,
                *_options(data_root, 2)], PORT=str(_free_port()))
    assert out.count('No CUDA: 1 SyncBN norm config(s) replaced by GlooSyncBN') == 2
    return _final_state(work_dir)


@pytest.mark.slow
def test_dist_train_two_processes_equal_one_process(one_process, two_processes):
    """The shipped SyncBN settings on CPU: 2 gloo processes x 2 images == 1 process x 4 images."""
    assert one_process.keys() == two_processes.keys()
    assert _max_diff(one_process, two_processes) < 1e-5


@pytest.mark.slow
def test_dist_train_two_nodes_equal_one_node(data_root, spaced_config, two_processes, tmp_path):
    """NNODES=2: two torchrun 'nodes' on localhost (NODE_RANK 0 and 1, one process each)."""
    work_dir = str(tmp_path / 'work dir')
    port = str(_free_port())
    cmd = ['bash', osp.join(TOOLS, 'dist_train.sh'), spaced_config, '1', '--work-dir', work_dir,
           *_options(data_root, 2)]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'NNODES': '2', 'MASTER_ADDR': '127.0.0.1', 'PORT': port}
    nodes = [subprocess.Popen(cmd, cwd=REPO, env={**env, 'NODE_RANK': str(r)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outs = [n.communicate(timeout=900)[0] for n in nodes]
    assert all(n.returncode == 0 for n in nodes), outs[0][-4000:] + outs[1][-4000:]
    assert _max_diff(_final_state(work_dir), two_processes) < 1e-6


@pytest.fixture(scope='module')
def local_slurm():
    """A running one-node Slurm (tools/slurm/start_local_slurm.sh); skips when Slurm is not installed."""
    missing = [t for t in ('slurmctld', 'slurmd', 'munged', 'srun')
               if shutil.which(t) is None and not osp.exists(f'/usr/sbin/{t}')]
    if missing:
        pytest.skip(f'Slurm is not installed ({", ".join(missing)} not found; apt-get install slurm-wlm munge)')
    if os.geteuid() != 0:
        pytest.skip('tools/slurm/start_local_slurm.sh starts the Slurm daemons as root')
    proc = subprocess.run(['bash', osp.join(TOOLS, 'slurm', 'start_local_slurm.sh')], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split("'")[1]  # export SLURM_CONF='...'


@pytest.mark.slow
def test_slurm_train_under_a_real_slurm(local_slurm, data_root, spaced_config, two_processes, tmp_path):
    """tools/slurm_train.sh, 2 tasks on the local Slurm node (gloo), equals the torchrun 2-process run."""
    work_dir = str(tmp_path / 'work dir')
    out = _run(['bash', osp.join(TOOLS, 'slurm_train.sh'), 'local', 'dgmn mm test', spaced_config, work_dir,
                *_options(data_root, 2)],
               SLURM_CONF=local_slurm, GPUS='2', GPUS_PER_NODE='2', CPUS_PER_TASK='1', GRES='',
               MASTER_PORT=str(_free_port()), SRUN_ARGS='--time=10')
    assert out.count('No CUDA: 1 SyncBN norm config(s) replaced by GlooSyncBN') == 2
    assert _max_diff(_final_state(work_dir), two_processes) < 1e-6


def _tiny_batch_body(rank, world):
    torch.manual_seed(0)
    model = DGMN2(arch=TINY, norm_cfg=dict(type='GlooSyncBN')).train()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))[rank:rank + 1]
    return model(x)[3].detach()  # stage 4 is 1x1: 1 value per process, 2 in all


@pytest.mark.slow  # a distributed run: two spawned gloo processes
def test_sync_bn_batch_of_one_per_process(tmp_path):
    """The min-size check counts a synchronised BN's values over all processes: 2 x (1 image of 32 px) trains
    (a 1x1 last map holds 2 values per channel in all), and equals 1 process with both images and BN."""
    got = torch.cat(_spawn_two(_tiny_batch_body, str(tmp_path / 'tiny')))
    torch.manual_seed(0)
    single = DGMN2(arch=TINY, norm_cfg=dict(type='BN')).train()
    with torch.no_grad():
        ref = single(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)))[3]
    # BN over 2 values per channel amplifies rounding (1 / std of two nearby values): a looser tolerance
    torch.testing.assert_close(got, ref, rtol=1e-3, atol=5e-4)
    with pytest.raises(ValueError, match='A batch of 1 needs H or W >= 33 px'):
        single(torch.randn(1, 3, 32, 32))  # one process, local BN: the clear error

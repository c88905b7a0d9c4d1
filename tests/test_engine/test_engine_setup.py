"""dgmn_mm.engine: weights_only-safe checkpoints, CPU (gloo) distributed set-up, codebase detection.

The checkpoint tests train tiny DGMN2 models with the real mmpretrain / mmdet / mmseg runners (optimizer,
param schedulers, message hub, CheckpointHook) and reload what they wrote with ``weights_only=True``.
"""
import json
import os
import os.path as osp
import pickle
import socket

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner

from dgmn_mm.engine import (DeviceAgnosticDDP, convert_syncbn_cfg, detect_codebase, init_codebase,
                            init_process_group, safe_globals, setup_distributed,
                            unsafe_globals_in_checkpoint)

CONFIGS = osp.join(osp.dirname(osp.abspath(__file__)), '..', 'data', 'configs')


# ------------------------------------------------------------------------------------------------------
# tiny data sets
# ------------------------------------------------------------------------------------------------------
def _image(rng, size=32):
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def write_cls_data(root):
    """ImageNet-style folders: {train,val}/{a,b}/*.png, 32 x 32."""
    rng = np.random.default_rng(0)
    for split, per_class in (('train', 2), ('val', 1)):
        for cls in ('a', 'b'):
            os.makedirs(osp.join(root, split, cls))
            for i in range(per_class):
                cv2.imwrite(osp.join(root, split, cls, f'{i}.png'), _image(rng))


def write_coco_data(root):
    """Two 64 x 64 images with two boxes each, COCO json."""
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'img'))
    images, anns = [], []
    for i in range(2):
        cv2.imwrite(osp.join(root, 'img', f'{i}.png'), _image(rng, 64))
        images.append(dict(id=i, file_name=f'{i}.png', height=64, width=64))
        for j, box in enumerate(([4, 6, 30, 24], [30, 28, 26, 30])):
            anns.append(dict(id=2 * i + j, image_id=i, category_id=j, bbox=box, area=box[2] * box[3],
                             iscrowd=0))
    with open(osp.join(root, 'ann.json'), 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=[dict(id=0, name='a'),
                                                                    dict(id=1, name='b')]), f)


def write_seg_data(root):
    """Two 32 x 32 images with {0, 1} label maps."""
    rng = np.random.default_rng(0)
    os.makedirs(osp.join(root, 'img'))
    os.makedirs(osp.join(root, 'ann'))
    for i in range(2):
        cv2.imwrite(osp.join(root, 'img', f'{i}.png'), _image(rng))
        cv2.imwrite(osp.join(root, 'ann', f'{i}.png'), (rng.random((32, 32)) > 0.5).astype(np.uint8))


CASES = {
    'mmpretrain': ('dgmn2_tiny_cls_syncbn.py', write_cls_data),
    'mmdet': ('dgmn2_tiny_retinanet.py', write_coco_data),
    'mmseg': ('dgmn2_tiny_fcn.py', write_seg_data),
}


def build_runner(codebase, data_root, work_dir, name, **overrides):
    """A Runner for the tiny config of ``codebase``, prepared exactly as tools/train.py does."""
    path = osp.join(CONFIGS, CASES[codebase][0])
    cfg = Config.fromfile(path)
    for split in ('train', 'val', 'test'):
        if cfg.get(f'{split}_dataloader'):
            cfg[f'{split}_dataloader'].dataset.data_root = data_root
    cfg.work_dir = work_dir
    cfg.experiment_name = name  # unique: runners built within one second must not share a scope
    cfg.merge_from_dict(overrides)
    init_codebase(cfg, detect_codebase(cfg, path))
    setup_distributed(cfg, 'none')
    return Runner.from_cfg(cfg)


def _longer(codebase):
    """Overrides that continue the 1-epoch (mmseg: 2-iteration) schedule by as much again."""
    return dict(train_cfg=dict(max_iters=4)) if codebase == 'mmseg' else dict(train_cfg=dict(max_epochs=2))


@pytest.fixture(scope='module', params=list(CASES))
def trained(request, tmp_path_factory):
    """(codebase, data_root, work_dir, checkpoint) after a short real training run."""
    codebase = request.param
    base = tmp_path_factory.mktemp(codebase)
    data_root, work_dir = str(base / 'data'), str(base / 'work')
    CASES[codebase][1](data_root)
    runner = build_runner(codebase, data_root, work_dir, f'{codebase}_train')
    runner.train()
    ckpt = osp.join(work_dir, 'iter_2.pth' if codebase == 'mmseg' else 'epoch_1.pth')
    assert osp.isfile(ckpt)
    return codebase, data_root, work_dir, ckpt


def _allowed_names():
    names = set()
    for entry in safe_globals():
        names.add(entry[1] if isinstance(entry, tuple) else f'{entry.__module__}.{entry.__qualname__}')
    return names


@pytest.fixture
def without_allow_list():
    """Temporarily remove every user-registered safe global (restored afterwards)."""
    saved = list(torch.serialization.get_safe_globals())
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


# ------------------------------------------------------------------------------------------------------
# weights_only loading of real Runner checkpoints
# ------------------------------------------------------------------------------------------------------
def test_runner_checkpoint_needs_exactly_the_allow_list(trained, without_allow_list):
    """Without the allow-list torch refuses the checkpoint; what it lacks is covered by the allow-list."""
    _, _, _, ckpt = trained
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ckpt, map_location='cpu', weights_only=True)
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(ckpt))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in needed
    assert needed <= _allowed_names(), needed - _allowed_names()


def test_runner_checkpoint_loads_weights_only(trained):
    codebase, _, _, ckpt = trained
    assert unsafe_globals_in_checkpoint(ckpt) == []
    state = torch.load(ckpt, map_location='cpu', weights_only=True)
    assert {'meta', 'state_dict', 'optimizer', 'param_schedulers', 'message_hub'} <= set(state)
    buffers = state['message_hub']['log_scalars']
    assert buffers and all(isinstance(v, HistoryBuffer) for v in buffers.values())
    assert np.isfinite(buffers['train/loss'].current())
    assert any(k.startswith('backbone.stages.0.') for k in state['state_dict'])
    assert state['meta']['dataset_meta']['classes']


def test_resume_and_load_from(trained):
    """--resume continues the schedule; load_from restores the weights (both through torch.load's default)."""
    codebase, data_root, work_dir, ckpt = trained
    logged = len(torch.load(ckpt, weights_only=True)['message_hub']['log_scalars']['train/loss']._log_history)
    runner = build_runner(codebase, data_root, work_dir, f'{codebase}_resume', resume=True, load_from=ckpt,
                          **_longer(codebase))
    runner.train()
    if codebase == 'mmseg':
        assert runner.iter == 4 and osp.isfile(osp.join(work_dir, 'iter_4.pth'))
    else:
        assert runner.epoch == 2 and osp.isfile(osp.join(work_dir, 'epoch_2.pth'))
    hub = torch.load(osp.join(work_dir, 'iter_4.pth' if codebase == 'mmseg' else 'epoch_2.pth'),
                     weights_only=True)['message_hub']
    assert len(hub['log_scalars']['train/loss']._log_history) == 2 * logged  # resumed + as many new

    runner = build_runner(codebase, data_root, work_dir, f'{codebase}_load', load_from=ckpt)
    runner.load_or_resume()
    expected = torch.load(ckpt, weights_only=True)['state_dict']
    for key, value in runner.model.state_dict().items():
        torch.testing.assert_close(value, expected[key])


def test_numpy_values_in_meta_load(tmp_path):
    meta = dict(f64=np.float64(1.5), f32=np.float32(2.5), i64=np.int64(3), b=np.bool_(True),
                arr=np.arange(6, dtype=np.float32).reshape(2, 3), u8=np.zeros(2, np.uint8))
    torch.save(dict(meta=meta, state_dict=dict(w=torch.ones(2))), tmp_path / 'np.pth')
    assert unsafe_globals_in_checkpoint(str(tmp_path / 'np.pth')) == []
    loaded = torch.load(tmp_path / 'np.pth', weights_only=True)['meta']
    for key, value in meta.items():
        assert type(loaded[key]) is type(value)
        np.testing.assert_array_equal(loaded[key], value)


# ------------------------------------------------------------------------------------------------------
# ... and refusal of anything else
# ------------------------------------------------------------------------------------------------------
class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


class _GetattrGadget:
    """``getattr(HistoryBuffer.min, '__globals__')``: the first step from an allowed function to os."""

    def __reduce__(self):
        return getattr, (HistoryBuffer.min, '__globals__')


class _OtherHistoryBufferAttr:
    def __reduce__(self):
        return getattr, (HistoryBuffer, 'update')


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(1)), meta=dict(x=_RunsShell(marker))), path)
    assert 'posix.system' in unsafe_globals_in_checkpoint(str(path))
    with pytest.raises(pickle.UnpicklingError, match='system'):
        torch.load(path, weights_only=True)
    from mmengine.runner.checkpoint import _load_checkpoint  # the path of load_from / --resume / test.py
    with pytest.raises(pickle.UnpicklingError):
        _load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


@pytest.mark.parametrize('gadget', [_GetattrGadget, _OtherHistoryBufferAttr])
def test_getattr_only_reaches_history_buffer_statistics(tmp_path, gadget):
    path = tmp_path / 'gadget.pth'
    torch.save(dict(meta=dict(x=gadget())), path)
    with pytest.raises(pickle.UnpicklingError, match='not allowed'):
        torch.load(path, weights_only=True)


def test_weights_only_stays_on():
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ
    assert getattr not in torch.serialization.get_safe_globals()
    assert os.system not in torch.serialization.get_safe_globals()


# ------------------------------------------------------------------------------------------------------
# distributed set-up
# ------------------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _cfg(**extra):
    return Config(dict(
        model=dict(type='ImageClassifier', backbone=dict(type='DGMN2', norm_cfg=dict(type='SyncBN')),
                   heads=[dict(norm_cfg=dict(type='MMSyncBN', momentum=0.01)),
                          dict(norm_cfg=dict(type='BN'))]),
        env_cfg=dict(dist_cfg=dict(backend='nccl')), **extra))


def test_convert_syncbn_cfg():
    cfg = _cfg()
    assert convert_syncbn_cfg(cfg.model) == 2
    assert cfg.model.backbone.norm_cfg.type == 'BN'
    assert cfg.model.heads[0].norm_cfg == dict(type='BN', momentum=0.01)
    assert convert_syncbn_cfg(dict(norm=dict(type=torch.nn.SyncBatchNorm))) == 1


def test_setup_distributed_single_process_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = setup_distributed(_cfg(sync_bn='torch'), 'none')
    assert cfg.model.backbone.norm_cfg.type == 'BN' and cfg.sync_bn is None
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'  # unused without a launcher
    assert cfg.get('model_wrapper_cfg') is None


def test_setup_distributed_on_gpus_changes_nothing(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    cfg = setup_distributed(_cfg(sync_bn='torch'), 'pytorch')
    assert cfg.model.backbone.norm_cfg.type == 'SyncBN' and cfg.model.heads[0].norm_cfg.type == 'MMSyncBN'
    assert cfg.sync_bn == 'torch'
    assert cfg.env_cfg.dist_cfg.backend == 'nccl'
    assert cfg.get('model_wrapper_cfg') is None  # mmengine's MMDistributedDataParallel with device_ids
    assert not torch_dist.is_initialized()  # left to mmengine's init_dist


def test_gloo_group_and_ddp_wrapper_on_cpu(monkeypatch):
    """The launcher path on CPU: gloo group, config switched, and the wrapper accepts device_ids."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for key, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT=str(_free_port())).items():
        monkeypatch.setenv(key, value)
    assert not torch_dist.is_initialized()
    try:
        cfg = setup_distributed(_cfg(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                                            find_unused_parameters=True)), 'pytorch')
        assert torch_dist.is_initialized() and torch_dist.get_backend() == 'gloo'
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'
        assert cfg.model_wrapper_cfg == dict(type='DeviceAgnosticDDP', find_unused_parameters=True)
        assert cfg.model.backbone.norm_cfg.type == 'GlooSyncBN'  # synchronised over the gloo processes
        assert cfg.model.heads[0].norm_cfg == dict(type='GlooSyncBN', momentum=0.01)
        assert cfg.model.heads[1].norm_cfg.type == 'BN'
        assert setup_distributed(_cfg(), 'pytorch').model_wrapper_cfg.type == 'DeviceAgnosticDDP'
        custom = setup_distributed(_cfg(model_wrapper_cfg=dict(type='MMFullyShardedDataParallel')), 'pytorch')
        assert custom.model_wrapper_cfg.type == 'MMFullyShardedDataParallel'

        # what Runner.wrap_model does with a model_wrapper_cfg of a DDP subclass
        assert MODEL_WRAPPERS.get('DeviceAgnosticDDP') is DeviceAgnosticDDP
        module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
        with pytest.raises(ValueError, match='device_ids'):  # the mmengine breakage this works around
            MMDistributedDataParallel(module=module, device_ids=[0])
        model = MODEL_WRAPPERS.build(dict(type='DeviceAgnosticDDP', broadcast_buffers=False),
                                     default_args=dict(module=module, device_ids=[0]))
        assert model.device_ids is None
        model(torch.randn(4, 3)).sum().backward()
        assert module[0].weight.grad is not None
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def test_init_process_group_slurm_on_cpu(monkeypatch):
    """The slurm launcher path: rank/world size from SLURM_*, exported as RANK/WORLD_SIZE/LOCAL_RANK."""
    for key in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_PORT'):
        monkeypatch.delenv(key, raising=False)
    for key, value in dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_NODELIST='localhost', SLURM_LOCALID='0',
                           MASTER_ADDR='127.0.0.1').items():
        monkeypatch.setenv(key, value)
    assert not torch_dist.is_initialized()
    try:
        init_process_group('slurm', backend='gloo', port=_free_port(), timeout=60)
        assert torch_dist.get_backend() == 'gloo' and torch_dist.get_world_size() == 1
        assert (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK']) == ('0', '1', '0')
    finally:
        if torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def test_init_process_group_rejects_unknown_launcher():
    with pytest.raises(ValueError, match='launcher'):
        init_process_group('none')


# ------------------------------------------------------------------------------------------------------
# codebase detection
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('scope', ['mmpretrain', 'mmdet', 'mmseg'])
def test_detect_codebase_from_default_scope(scope):
    assert detect_codebase(Config(dict(default_scope=scope))) == scope


def test_detect_codebase_from_bases(tmp_path):
    (tmp_path / 'base.py').write_text("_base_ = ['mmseg::_base_/default_runtime.py']\n")
    (tmp_path / 'cfg.py').write_text("_base_ = [\n    './base.py',\n]\nmodel = dict()\n")
    assert detect_codebase(Config(dict(model=dict())), str(tmp_path / 'cfg.py')) == 'mmseg'
    (tmp_path / 'plain.py').write_text('model = dict()\n')
    with pytest.raises(ValueError, match='default_scope'):
        detect_codebase(Config(dict(model=dict())), str(tmp_path / 'plain.py'))

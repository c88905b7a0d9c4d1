"""dgmn_mm.analysis.speed: the timing loop and the inputs of ``test_step``."""
import pytest
import torch
from mmengine.config import Config

import dgmn_mm  # noqa: F401
from dgmn_mm.analysis import benchmark, build_model, make_predict_batch

CLS_CFG = dict(
    default_scope='mmpretrain',
    model=dict(type='ImageClassifier', backbone=dict(type='DGMN2', arch='tiny', out_indices=(3, )),
               neck=dict(type='GlobalAveragePooling'),
               head=dict(type='LinearClsHead', num_classes=10, in_channels=512, loss=dict(type='CrossEntropyLoss'))))


def test_benchmark_runs_warmup_then_repeats_of_iters():
    calls = []
    res = benchmark(None, lambda: calls.append(torch.is_grad_enabled()), batch_size=4, warmup=2, iters=3,
                    repeats=5)
    assert len(calls) == 2 + 3 * 5 and not any(calls)  # every call under torch.no_grad()
    assert len(res['runs']) == 5 and all(r > 0 for r in res['runs'])
    assert min(res['runs']) <= res['images_per_s'] <= max(res['runs'])
    for bad in (dict(iters=0), dict(repeats=0), dict(warmup=-1), dict(batch_size=0)):
        with pytest.raises(ValueError, match='iters, repeats and batch_size must be >= 1'):
            benchmark(None, lambda: None, **bad)


def test_make_predict_batch_feeds_test_step():
    model = build_model(Config(CLS_CFG))
    batch = make_predict_batch(model, (64, 48), 2)
    assert [tuple(x.shape) for x in batch['inputs']] == [(3, 64, 48)] * 2
    assert all(x.dtype == torch.uint8 for x in batch['inputs'])
    with torch.no_grad():
        out = model.test_step(batch)
    assert len(out) == 2 and out[0].pred_score.shape == (10, )
    with pytest.raises(ValueError, match='needs a detector, segmentor or classifier'):
        make_predict_batch(torch.nn.Linear(2, 2), (8, 8), 1)

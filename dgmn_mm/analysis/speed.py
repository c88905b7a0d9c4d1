"""Inference speed (images/s) of a model built from a config: warm-up, then the median of several timed runs.

The model is built as in :mod:`dgmn_mm.analysis.complexity` (SyncBN -> BN, eval mode, no weights unless
loaded afterwards) and fed random images, padded as the data preprocessor pads. Two things can be timed:

- the network forward (backbone, neck, head: ``mode='tensor'``), with the inputs of
  :func:`~dgmn_mm.analysis.complexity.make_inputs`;
- ``model.test_step`` on uint8 images (:func:`make_predict_batch`), i.e. with the data preprocessor and the
  post-processing (NMS, mask pasting, resizing of the segmentation logits; mmseg's ``test_cfg`` mode, e.g.
  slide inference, applies).

:func:`benchmark` runs ``warmup`` untimed iterations, then ``repeats`` runs of ``iters`` iterations each;
the reported speed is the median over the runs of ``iters * batch_size / run time``.
"""
import statistics
import time
from typing import Callable, Dict, Sequence

import torch
import torch.nn as nn

from .complexity import model_kind

__all__ = ['make_predict_batch', 'benchmark']


def _sync(device: str):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def make_predict_batch(model: nn.Module, shape: Sequence[int], batch_size: int) -> dict:
    """uint8 images and data samples for ``model.test_step`` (detector, segmentor or classifier).

    Args:
        model (nn.Module): an mmdet detector, mmseg segmentor or mmpretrain classifier.
        shape (Sequence[int]): image (H, W).
        batch_size (int): number of images.

    Returns:
        dict: ``inputs`` (list of (3, H, W) uint8 tensors) and ``data_samples``.
    """
    kind = model_kind(model)
    h, w = shape
    inputs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for _ in range(batch_size)]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.), img_id=0)
    if kind == 'detector':
        from mmdet.structures import DetDataSample as Sample
    elif kind == 'segmentor':
        from mmseg.structures import SegDataSample as Sample
    elif kind == 'classifier':
        from mmpretrain.structures import DataSample as Sample
    else:
        raise ValueError('--mode predict needs a detector, segmentor or classifier')
    samples = []
    for _ in range(batch_size):
        s = Sample()
        s.set_metainfo(meta if kind != 'classifier' else dict(img_shape=(h, w), ori_shape=(h, w)))
        samples.append(s)
    return dict(inputs=inputs, data_samples=samples)


def benchmark(model: nn.Module, run_once: Callable[[], object], device: str = 'cpu', batch_size: int = 1,
              warmup: int = 5, iters: int = 20, repeats: int = 5) -> Dict[str, object]:
    """Time ``run_once`` under ``torch.no_grad()``.

    Args:
        model (nn.Module): the model ``run_once`` runs (kept for the caller's bookkeeping).
        run_once (callable): one iteration (a forward of ``batch_size`` images).
        device (str): 'cpu' or a CUDA device (synchronised before the clock is read).
        batch_size (int): images per iteration.
        warmup (int): untimed iterations first.
        iters (int): iterations per timed run.
        repeats (int): timed runs.

    Returns:
        dict: ``images_per_s`` (median over the runs) and ``runs`` (images/s of each run).
    """
    if iters < 1 or repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(f'iters, repeats and batch_size must be >= 1 and warmup >= 0, got iters={iters}, '
                         f'repeats={repeats}, batch_size={batch_size}, warmup={warmup}')
    with torch.no_grad():
        for _ in range(warmup):
            run_once()
        _sync(device)
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(iters):
                run_once()
            _sync(device)
            runs.append(iters * batch_size / (time.perf_counter() - t0))
    return dict(images_per_s=statistics.median(runs), runs=runs)

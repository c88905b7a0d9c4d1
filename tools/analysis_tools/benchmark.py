"""Inference speed (images/s) of any model in ``configs/``: warm-up, then the median of several timed runs.

Usage::

    python tools/analysis_tools/benchmark.py CONFIG [--shape H W] [--batch-size B] [--warmup 5]
        [--iters 20] [--repeats 5] [--mode {tensor,predict}] [--device cpu|cuda] [--threads N]
        [--checkpoint FILE] [--cfg-options k=v ...]

The model is built from the config as in ``get_flops.py`` (SyncBN -> BN, eval mode, no weights unless
``--checkpoint``) and fed random images of ``--shape`` (padded as the data preprocessor pads).
``--mode tensor`` (default) times the network forward (backbone, neck, head: ``mode='tensor'``);
``--mode predict`` times ``model.test_step`` on uint8 images, i.e. with the data preprocessor and the
post-processing (NMS, mask pasting, resizing of the segmentation logits; mmseg's ``test_cfg`` mode, e.g.
slide inference, applies). After ``--warmup`` untimed iterations, each of ``--repeats`` runs times
``--iters`` iterations; the reported speed is the median over the runs of
``iters * batch_size / run time`` (min and max are printed as well).
"""
import argparse
import importlib.util
import os.path as osp
import statistics
import time

import torch
from mmengine.config import DictAction

_spec = importlib.util.spec_from_file_location(
    'dgmn_get_flops', osp.join(osp.dirname(osp.abspath(__file__)), 'get_flops.py'))
gf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gf)


def _sync(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def make_predict_batch(model, shape, batch_size):
    """uint8 images and data samples for ``model.test_step``."""
    kind = gf.model_kind(model)
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


def benchmark(model, run_once, device='cpu', batch_size=1, warmup=5, iters=20, repeats=5):
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Benchmark the inference speed of a dgmn_mm config')
    p.add_argument('config')
    p.add_argument('--shape', type=int, nargs='+', default=None,
                   help='input H W (one value: square); defaults as in get_flops.py')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--warmup', type=int, default=5, help='untimed iterations first')
    p.add_argument('--iters', type=int, default=20, help='iterations per timed run')
    p.add_argument('--repeats', type=int, default=5, help='timed runs; the median is reported')
    p.add_argument('--mode', choices=['tensor', 'predict'], default='tensor')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads on CPU')
    p.add_argument('--checkpoint', default=None, help='optional weights to load')
    p.add_argument('--no-pad', action='store_true', help='do not pad like the data preprocessor')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = gf.load_config(args.config, args.cfg_options)
    model = gf.build_model(cfg)
    if args.checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model = model.to(args.device).eval()
    kind = gf.model_kind(model)
    shape = gf.DEFAULT_SHAPES[kind] if not args.shape else (
        (args.shape[0], args.shape[0]) if len(args.shape) == 1 else tuple(args.shape[:2]))

    if args.mode == 'tensor':
        inputs, forward = gf.make_inputs(model, shape, args.batch_size, pad=not args.no_pad)
        inputs = inputs.to(args.device)
        if kind == 'detector':  # the data samples carry the padded batch shape
            forward.keywords['data_samples'] = [s.to(args.device) for s in forward.keywords['data_samples']]

        def run_once():
            return forward(inputs)
        input_shape = tuple(inputs.shape)
    else:
        batch = make_predict_batch(model, shape, args.batch_size)

        def run_once():
            return model.test_step(batch)
        input_shape = (args.batch_size, 3, *shape)

    res = benchmark(model, run_once, args.device, args.batch_size, args.warmup, args.iters, args.repeats)
    res.update(config=args.config, mode=args.mode, input_shape=input_shape, device=args.device,
               threads=torch.get_num_threads())
    runs = ', '.join(f'{r:.2f}' for r in res['runs'])
    print(f"{args.config}\n  mode {args.mode}, input {input_shape}, device {args.device}, "
          f"{res['threads']} threads, warm-up {args.warmup}, {args.repeats} runs x {args.iters} iters\n"
          f"  median {res['images_per_s']:.3f} images/s (min {min(res['runs']):.3f}, "
          f"max {max(res['runs']):.3f}; runs: {runs})")
    return res


if __name__ == '__main__':
    main()

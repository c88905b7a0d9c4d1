"""Inference speed (images/s) of any model in ``configs/``: warm-up, then the median of several timed runs.

Usage::

    python tools/analysis_tools/benchmark.py CONFIG [--shape H W] [--batch-size B] [--warmup 5]
        [--iters 20] [--repeats 5] [--mode {tensor,predict}] [--device cpu|cuda] [--threads N]
        [--checkpoint FILE] [--cfg-options k=v ...]

The model is built from the config as in ``get_flops.py`` (SyncBN -> BN, eval mode, no weights unless
``--checkpoint``) and fed random images of ``--shape`` (padded as the data preprocessor pads); the timing is
:mod:`dgmn_mm.analysis.speed`.
``--mode tensor`` (default) times the network forward (backbone, neck, head: ``mode='tensor'``);
``--mode predict`` times ``model.test_step`` on uint8 images, i.e. with the data preprocessor and the
post-processing (NMS, mask pasting, resizing of the segmentation logits; mmseg's ``test_cfg`` mode, e.g.
slide inference, applies). After ``--warmup`` untimed iterations, each of ``--repeats`` runs times
``--iters`` iterations; the reported speed is the median over the runs of
``iters * batch_size / run time`` (min and max are printed as well).
"""
import argparse
import os.path as osp
import sys

import torch
from mmengine.config import DictAction

_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if osp.isdir(osp.join(_ROOT, 'dgmn_mm')):  # run from a source checkout: its dgmn_mm first
    sys.path.insert(0, _ROOT)

from dgmn_mm.analysis import (benchmark, build_model, input_shape, load_config, make_inputs,  # noqa: E402
                              make_predict_batch, model_kind)

__all__ = ['parse_args', 'main']


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
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg)
    if args.checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    model = model.to(args.device).eval()
    kind = model_kind(model)
    shape = input_shape(args.shape[:2] if args.shape else None, kind)

    if args.mode == 'tensor':
        inputs, forward = make_inputs(model, shape, args.batch_size, pad=not args.no_pad)
        inputs = inputs.to(args.device)
        if kind == 'detector':  # the data samples carry the padded batch shape
            forward.keywords['data_samples'] = [s.to(args.device) for s in forward.keywords['data_samples']]

        def run_once():
            return forward(inputs)
        batch_shape = tuple(inputs.shape)
    else:
        batch = make_predict_batch(model, shape, args.batch_size)

        def run_once():
            return model.test_step(batch)
        batch_shape = (args.batch_size, 3, *shape)

    res = benchmark(model, run_once, args.device, args.batch_size, args.warmup, args.iters, args.repeats)
    res.update(config=args.config, mode=args.mode, input_shape=batch_shape, device=args.device,
               threads=torch.get_num_threads())
    runs = ', '.join(f'{r:.2f}' for r in res['runs'])
    print(f"{args.config}\n  mode {args.mode}, input {batch_shape}, device {args.device}, "
          f"{res['threads']} threads, warm-up {args.warmup}, {args.repeats} runs x {args.iters} iters\n"
          f"  median {res['images_per_s']:.3f} images/s (min {min(res['runs']):.3f}, "
          f"max {max(res['runs']):.3f}; runs: {runs})")
    return res


if __name__ == '__main__':
    main()

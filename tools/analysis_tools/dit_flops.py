"""Average FLOPs of a DiT model over a dataset with hard gates (the paper's FLOPs column).

Usage::

    python tools/analysis_tools/dit_flops.py CONFIG [--checkpoint CKPT] [--num-images N]
        [--split {val,test}] [--synthetic H W] [--cfg-options k=v ...]

The model is built from the config (classifier, detector or segmentor with a ``DiT`` backbone), the
checkpoint loaded if given, and put in eval mode: the gates are hard (argmax with the momentum weights,
Eq. 3). Images are fed one at a time through the config's data preprocessor (``--split`` dataloader, batch 1,
so no padding to a common batch size) or, with ``--synthetic H W``, random images of that size (no dataset
needed). For every image the backbone reports the FLOPs its gates used (multiply-adds of the blocks, patch
embeddings, gates and stem: the ``complexity`` its output carries, Eq. 5 with hard gates); the tool prints their mean,
standard deviation, min and max, next to the all-gates-open FLOPs and the PVTv2 baseline of the same input
size. Only the backbone is counted (the paper's classification FLOPs add a 0.5 MFLOP head).
"""
import argparse
import statistics

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

import dgmn_mm  # noqa: F401
from dgmn_mm.registry import MODELS


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('config')
    p.add_argument('--checkpoint', default=None)
    p.add_argument('--num-images', type=int, default=100)
    p.add_argument('--split', choices=['val', 'test'], default='val')
    p.add_argument('--synthetic', type=int, nargs=2, metavar=('H', 'W'), default=None,
                   help='random images of this size instead of the dataset')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def build_model(cfg, checkpoint=None):
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.eval()


def iter_images(cfg, model, split, num_images, synthetic, seed=0):
    """Yields (1, 3, H, W) backbone inputs (after the data preprocessor)."""
    if synthetic is not None:
        g = torch.Generator().manual_seed(seed)
        for _ in range(num_images):
            yield torch.randn(1, 3, *synthetic, generator=g)
        return
    from mmengine.runner import Runner
    loader_cfg = cfg.get(f'{split}_dataloader').copy()
    loader_cfg['batch_size'] = 1
    loader = Runner.build_dataloader(loader_cfg)
    for k, data in enumerate(loader):
        if k >= num_images:
            break
        yield model.data_preprocessor(data, False)['inputs']


@torch.no_grad()
def average_flops(model, images):
    backbone = model.backbone if hasattr(model, 'backbone') else model
    per_image, dense, pvtv2 = [], [], []
    for x in images:
        c = backbone(x).complexity
        per_image.extend(c['flops'].tolist())
        dense.append(c['dense_flops'])
        pvtv2.append(c['pvtv2_flops'] if c['pvtv2_flops'] is not None else float('nan'))
    if not per_image:
        raise RuntimeError('no images')
    return dict(num_images=len(per_image), mean=statistics.fmean(per_image),
                std=statistics.pstdev(per_image), min=min(per_image), max=max(per_image),
                dense=statistics.fmean(dense), pvtv2=statistics.fmean(pvtv2))


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    torch.manual_seed(args.seed)
    model = build_model(cfg, args.checkpoint)
    stats = average_flops(model, iter_images(cfg, model, args.split, args.num_images, args.synthetic, args.seed))
    g = 1e9
    print(f"{args.config}: {stats['num_images']} images, hard gates")
    print(f"  DiT backbone GFLOPs: mean {stats['mean'] / g:.3f}  std {stats['std'] / g:.3f}  "
          f"min {stats['min'] / g:.3f}  max {stats['max'] / g:.3f}")
    print(f"  all gates open: {stats['dense'] / g:.3f}   PVTv2 baseline: {stats['pvtv2'] / g:.3f}   "
          f"ratio to open: {stats['mean'] / stats['dense']:.3f}")
    return stats


if __name__ == '__main__':
    main()

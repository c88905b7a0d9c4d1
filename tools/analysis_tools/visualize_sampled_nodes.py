"""Draw the nodes that DGMN2 samples for chosen query positions (the picture of the TPAMI 2022 paper's Fig. 5
and Fig. 11): for every stage, the K = 9 nodes each head reads for the query, on the photo.

Usage::

    python tools/analysis_tools/visualize_sampled_nodes.py CONFIG [CHECKPOINT] --img IMG \
        --points X,Y [X,Y ...] [--out FILE] [--block -1] [--zoom 3] [--max-size 512] [--dpi 100]
        [--palette] [--device cpu]

CONFIG is any config with a DGMN2 backbone (classifier, detector or segmentor); CHECKPOINT a trained or
converted checkpoint (without one the model keeps its random initialisation, and the walks are the small
offsets of an untrained walk predictor). ``--points`` are pixel positions ``x,y`` in the photo.

What is drawn. In a DGMN2 layer (``DGMN2Attention``), the query node i at map pixel (y, x) of a stage reads
per head the K = 9 nodes (Eq. 4 walks, Eq. 8 bilinear sampler)::

    p_k = (y + a - 1 + dy_k,  x + b - 1 + dx_k),    k = 3 a + b,  (a, b) in {0, 1, 2}^2

where (dy_k, dx_k) = ``predict_walk`` (the ``walk`` Linear applied to the normed tokens, per head). These
positions are taken from the model as it runs: a forward hook on every attention's ``walk`` Linear records
its output, reshaped exactly as ``DGMN2Attention.predict_walk`` does, and the grid is that of
``dgmn_mm.models.layers.node_sampling.uniform_grid`` (``sample_nodes`` samples at ``uniform_grid + walk``).
Map coordinates go to the photo by the patch embeddings' conv arithmetic: every stride-2 3x3 conv with
padding 1 centres its output pixel i on input pixel 2i, so map position p of a stage with total stride s
lies at ``s * p`` in the (resized) input, then scaled back to the photo. The attention is switched to its
``'reference'`` path while drawing (the fused path evaluates the same Linear without calling the module, so
no hook would fire); the walks are the same.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


# ------------------------------------------------------------------------------------------------------
# Capturing the walks
# ------------------------------------------------------------------------------------------------------
def find_dgmn2(model: nn.Module):
    from dgmn_mm.models.backbones.dgmn2 import DGMN2
    if isinstance(model, DGMN2):
        return model
    backbone = getattr(model, 'backbone', None)
    if isinstance(backbone, DGMN2):
        return backbone
    raise TypeError(f'the model must be a DGMN2 backbone or have one as .backbone, got '
                    f'{type(model).__name__} with backbone {type(backbone).__name__}')


class WalkRecorder:
    """Forward hooks that record, for every DGMN2 layer, the walks its ``walk`` Linear predicts.

    ``records[(stage, block)] = dict(hw_shape=(H, W), num_heads=h, walk=(B * h, H, W, K, 2) tensor,
    tokens=(B, N, C) normed input)``; ``walk`` is arranged exactly as ``DGMN2Attention.predict_walk``.
    """

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.records: Dict[Tuple[int, int], dict] = {}
        self._handles = []
        self._impls = []

    def __enter__(self):
        for i, stage in enumerate(self.backbone.stages):
            for j, block in enumerate(stage.blocks):
                attn = block.attn
                if hasattr(attn, 'attn_impl'):
                    self._impls.append((attn, attn.attn_impl))
                    attn.attn_impl = 'reference'  # calls attn.walk as a module, so the hook fires
                self._handles.append(attn.register_forward_pre_hook(self._pre_hook(i, j)))
                self._handles.append(attn.walk.register_forward_hook(self._walk_hook(i, j, attn)))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        for attn, impl in self._impls:
            attn.attn_impl = impl
        self._handles, self._impls = [], []

    def _pre_hook(self, i, j):
        def hook(module, args):
            x, hw_shape = args[0], tuple(args[1])
            self.records[(i, j)] = dict(hw_shape=hw_shape, num_heads=module.num_heads, tokens=x.detach())
        return hook

    def _walk_hook(self, i, j, attn):
        def hook(module, args, output):
            rec = self.records[(i, j)]
            if output.dim() != 4:
                raise RuntimeError(f'stage {i} block {j}: the walk Linear returned {tuple(output.shape)}, '
                                   'expected (B, N, heads, 2K)')
            H, W = rec['hw_shape']
            B, N, nh, _ = output.shape
            K = attn.num_samples
            walk = output.detach().view(B, H, W, nh, K, 2).permute(0, 3, 1, 2, 4, 5)
            rec['walk'] = walk.reshape(B * nh, H, W, K, 2)
        return hook


def stage_strides(backbone) -> List[int]:
    out, s = [], 1
    for st in backbone.strides:
        s *= st
        out.append(s)
    return out


def node_coords(walk: torch.Tensor, num_heads: int, query_yx: Tuple[int, int], batch_index: int = 0) -> torch.Tensor:
    """Map-pixel positions (y, x) of the K nodes each head samples for one query.

    Args:
        walk (Tensor): (B * h, H, W, K, 2) walks as ``predict_walk`` returns them.
        num_heads (int): h.
        query_yx (tuple[int, int]): the query's map pixel (row, column).

    Returns:
        Tensor: (h, K, 2) positions ``uniform_grid + walk`` (the points ``sample_nodes`` interpolates).
    """
    from dgmn_mm.models.layers.node_sampling import uniform_grid
    BH, H, W, K, _ = walk.shape
    y, x = query_yx
    if not (0 <= y < H and 0 <= x < W):
        raise ValueError(f'query {query_yx} is outside the {H} x {W} map')
    grid = uniform_grid(H, W, device=walk.device, dtype=walk.dtype)  # (H, W, K, 2)
    heads = walk.view(BH // num_heads, num_heads, H, W, K, 2)[batch_index]
    return grid[y, x] + heads[:, y, x]


def image_to_map(point_xy: Tuple[float, float], stride: int, hw_shape: Tuple[int, int],
                 scale: float) -> Tuple[int, int]:
    """Photo pixel (x, y) -> nearest map pixel (row, column) of a stage with total ``stride``."""
    x, y = point_xy
    H, W = hw_shape
    return (int(min(max(round(y * scale / stride), 0), H - 1)), int(min(max(round(x * scale / stride), 0), W - 1)))


def map_to_image(coords_yx: torch.Tensor, stride: int, scale: float) -> np.ndarray:
    """Map positions (..., 2) as (y, x) -> photo positions (..., 2) as (x, y)."""
    c = coords_yx.detach().cpu().double().numpy() * stride / scale
    return c[..., ::-1].copy()


# ------------------------------------------------------------------------------------------------------
# Model and image
# ------------------------------------------------------------------------------------------------------
def build(config: str, checkpoint=None, device='cpu', cfg_options=None):
    import dgmn_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine') or 'mmengine')
    model_cfg = cfg.model.copy()
    if model_cfg.get('backbone', {}).get('init_cfg') is not None:
        model_cfg.backbone.init_cfg = None  # weights come from CHECKPOINT, not from the pre-training file
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    if checkpoint:
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.to(device).eval()
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    dp = cfg.model.get('data_preprocessor') or {}
    mean, std = tuple(dp.get('mean', mean)), tuple(dp.get('std', std))
    return model, mean, std


def load_image(path: str, max_size: int = 512):
    """The photo as RGB uint8 (H, W, 3) and its resized copy (longest side <= max_size); returns both and
    the scale factor resized / photo."""
    from PIL import Image
    img = np.asarray(Image.open(path).convert('RGB'))
    h, w = img.shape[:2]
    scale = min(1.0, max_size / max(h, w)) if max_size else 1.0
    if scale < 1.0:
        resized = np.asarray(Image.fromarray(img).resize((round(w * scale), round(h * scale)), Image.BILINEAR))
        scale = resized.shape[1] / w
    else:
        resized = img
    return img, resized, scale


def to_tensor(rgb: np.ndarray, mean, std, device='cpu') -> torch.Tensor:
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x.unsqueeze(0).to(device)


def sampled_nodes(backbone, inputs: torch.Tensor, points_xy: Sequence[Tuple[float, float]], scale: float,
                  block: int = -1) -> List[dict]:
    """Run the backbone and return, per stage, the photo coordinates of the nodes each head samples.

    Returns:
        list[dict]: per stage ``stage``, ``block``, ``stride``, ``hw_shape``, ``num_heads``,
        ``queries`` [(row, col) per point], ``map_coords`` (P, h, K, 2) (y, x) on the map and
        ``image_coords`` (P, h, K, 2) (x, y) in the photo, and ``query_image`` (P, 2) (x, y).
    """
    strides = stage_strides(backbone)
    with WalkRecorder(backbone) as rec, torch.no_grad():
        backbone(inputs)
    missing = [k for k, r in rec.records.items() if 'walk' not in r]
    if missing:
        raise RuntimeError(f'no walks recorded for (stage, block) {missing}: the attention did not call its '
                           '`walk` Linear as a module')
    out = []
    for i, stage in enumerate(backbone.stages):
        j = block % len(stage.blocks)
        r = rec.records[(i, j)]
        queries = [image_to_map(p, strides[i], r['hw_shape'], scale) for p in points_xy]
        coords = torch.stack([node_coords(r['walk'], r['num_heads'], q) for q in queries])
        q_img = map_to_image(torch.tensor(queries, dtype=torch.float64), strides[i], scale)
        out.append(dict(stage=i, block=j, stride=strides[i], hw_shape=r['hw_shape'], num_heads=r['num_heads'],
                        queries=queries, map_coords=coords, image_coords=map_to_image(coords, strides[i], scale),
                        query_image=q_img, walk=r['walk'], scale=scale))
    return out


def _draw_panel(ax, photo, st, cmap, window=None):
    ax.imshow(photo)
    for p, (coords, q) in enumerate(zip(st['image_coords'], st['query_image'])):
        for h in range(st['num_heads']):
            color = cmap(h % 10)
            for k in range(coords.shape[1]):
                ax.plot([q[0], coords[h, k, 0]], [q[1], coords[h, k, 1]], color=color, lw=0.6, alpha=0.5)
            ax.scatter(coords[h, :, 0], coords[h, :, 1], s=14 if window is None else 30, color=color,
                       edgecolors='white', linewidths=0.4, label=f'head {h}' if p == 0 else None, zorder=3)
        ax.scatter([q[0]], [q[1]], marker='*', s=120 if window is None else 200, color='yellow',
                   edgecolors='black', zorder=4)
    if window is None:
        ax.set_xlim(0, photo.shape[1])
        ax.set_ylim(photo.shape[0], 0)
    else:
        (cx, cy), half = st['query_image'][0], window
        ax.set_xlim(cx - half, cx + half)
        ax.set_ylim(cy + half, cy - half)
    ax.axis('off')


def draw(photo: np.ndarray, stages: List[dict], out_file: str, title: str = '', zoom: int = 0, dpi: int = 100,
         palette: bool = False) -> str:
    """One panel per stage (the whole photo); with ``zoom`` > 0 a second row shows each stage around the
    first query, a window of +-(zoom x stride) photo pixels."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    n, rows = len(stages), 2 if zoom > 0 else 1
    aspect = photo.shape[0] / photo.shape[1]
    fig, axes = plt.subplots(rows, n, figsize=(4.2 * n, (4.2 * aspect + 0.6) + (4.4 if zoom > 0 else 0)),
                             squeeze=False, gridspec_kw=dict(height_ratios=[aspect, 1][:rows]))
    cmap = plt.get_cmap('tab10')
    for c, st in enumerate(stages):
        H, W = st['hw_shape']
        _draw_panel(axes[0, c], photo, st, cmap)
        axes[0, c].set_title(f"stage {st['stage'] + 1}, block {st['block'] + 1}\nstride {st['stride']}, "
                             f"{H}x{W} map, {st['num_heads']} head{'s' if st['num_heads'] > 1 else ''}",
                             fontsize=9)
        if zoom > 0:
            _draw_panel(axes[1, c], photo, st, cmap, window=zoom * st['stride'] / st['scale'])
            axes[1, c].set_title(f'around the first query (+-{zoom} map pixels)', fontsize=8)
        if st['num_heads'] <= 8:
            axes[rows - 1, c].legend(loc='lower right', fontsize=6, markerscale=0.8, framealpha=0.6)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    fig.savefig(out_file, dpi=dpi)
    plt.close(fig)
    if palette:  # 256-colour PNG: a fraction of the size, for documentation
        from PIL import Image
        Image.open(out_file).convert('RGB').quantize(256, method=Image.Quantize.FASTOCTREE).save(out_file, optimize=True)
    return out_file


def parse_point(text: str) -> Tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f'a point is "x,y" in photo pixels, got {text!r}')
    return x, y


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Draw the nodes DGMN2 samples for query positions')
    parser.add_argument('config', help='config with a DGMN2 backbone')
    parser.add_argument('checkpoint', nargs='?', default=None, help='checkpoint (default: random weights)')
    parser.add_argument('--img', required=True, help='photo')
    parser.add_argument('--points', required=True, nargs='+', type=parse_point, help='query positions x,y')
    parser.add_argument('--out', default='sampled_nodes.png', help='output picture')
    parser.add_argument('--block', type=int, default=-1, help='block of each stage to draw (default: last)')
    parser.add_argument('--max-size', type=int, default=512, help='resize the photo to this longest side')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random initialisation')
    parser.add_argument('--zoom', type=int, default=0,
                        help='add a row zoomed on the first query, +-ZOOM map pixels of each stage')
    parser.add_argument('--dpi', type=int, default=100)
    parser.add_argument('--palette', action='store_true', help='save a 256-colour PNG (smaller file)')
    parser.add_argument('--title', default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    model, mean, std = build(args.config, args.checkpoint, args.device)
    backbone = find_dgmn2(model)
    photo, resized, scale = load_image(args.img, args.max_size)
    for x, y in args.points:
        if not (0 <= x < photo.shape[1] and 0 <= y < photo.shape[0]):
            raise ValueError(f'--points: ({x}, {y}) is outside the {photo.shape[1]} x {photo.shape[0]} photo')
    stages = sampled_nodes(backbone, to_tensor(resized, mean, std, args.device), args.points, scale, args.block)
    title = args.title if args.title is not None else (
        f"{osp.basename(args.config)}: K = 9 sampled nodes per head"
        f"{'' if args.checkpoint else ' (random weights)'}")
    out = draw(photo, stages, args.out, title, args.zoom, args.dpi, args.palette)
    print(out)
    return out, stages


if __name__ == '__main__':
    main()

"""Draw the routing decisions of a DiT backbone on an image (the paper's Fig. 3) and write a PNG.

Usage::

    python tools/analysis_tools/visualize_dit_routing.py [--config CONFIG | --arch b1] [--checkpoint CKPT]
        [--img IMG | --synthetic] [--size 224] [--train-steps N --mu 0.45] --out routing.png

One panel per grid node (i, j): rows are the scales (strides 4, 8, 16, 32), columns the grid columns j.
Each panel shows the image with the node's tokens shaded by how many of the node's blocks *skipped* them
(white = identity path in every block, as the paper's white masks; clear = computed by every block), and
says whether the node's patch embedding sent the map down (``P on`` / ``P off``: the column gate). Nodes
outside the grid are left empty; a node that received nothing for this image is marked ``dead``.
Gates are hard (eval mode: argmax with the momentum weights).

Weights: ``--checkpoint`` (a classifier/detector/segmentor checkpoint or a backbone state dict), else the
initial weights. Untrained gates route every token (their bias is set to route 95% in training), so
``--train-steps N`` first trains the backbone briefly on synthetic shape images (a linear foreground/background
head on every output map plus the budget loss with target ``--mu``) - a demonstration of the tool, not the
paper's learned routing.
"""
import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import dgmn_mm  # noqa: F401
from dgmn_mm.models.backbones.dit import DiT
from dgmn_mm.models.dit_models import DiTBudgetLoss

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument('--config', default=None, help='a config with a DiT backbone')
    src.add_argument('--arch', default='b1', help="DiT arch (when no --config): 'b1'..'b5'")
    p.add_argument('--checkpoint', default=None)
    img = p.add_mutually_exclusive_group()
    img.add_argument('--img', default=None, help='an image file')
    img.add_argument('--synthetic', action='store_true', help='draw shapes (the default without --img)')
    p.add_argument('--size', type=int, default=224, help='square input size')
    p.add_argument('--train-steps', type=int, default=0)
    p.add_argument('--mu', type=float, default=0.45, help='budget of the brief training')
    p.add_argument('--batch', type=int, default=8, help='batch of the brief training')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--out', default='dit_routing.png')
    p.add_argument('--space', action='store_true',
                   help='draw the routing space (grid, depths, all-open GFLOPs) of the backbone instead')
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------------
def synthetic_image(size: int, rng: np.random.Generator):
    """A (size, size, 3) uint8 RGB image: a smooth background with a few filled shapes, and its (size, size)
    foreground mask."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(60, 160, 3)
    img = base[None, None] + 40 * (yy[..., None] - 0.5) * rng.uniform(-1, 1, 3)[None, None]
    fg = np.zeros((size, size), bool)
    for _ in range(rng.integers(2, 5)):
        kind = rng.integers(3)
        cy, cx = rng.uniform(0.15, 0.85, 2)
        r = rng.uniform(0.06, 0.22)
        if kind == 0:
            m = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        elif kind == 1:
            m = (abs(yy - cy) < r * 0.8) & (abs(xx - cx) < r * 1.2)
        else:
            m = (yy > cy - r) & (yy < cy + r) & (abs(xx - cx) < (yy - (cy - r)) * 0.6)
        img[m] = rng.uniform(0, 255, 3)
        fg |= m
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), fg


def load_image(path: str, size: int) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert('RGB').resize((size, size), Image.BILINEAR))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy((img.astype(np.float32) - MEAN) / STD).permute(2, 0, 1)[None]


# --------------------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------------------
def build_backbone(config=None, arch='b1', checkpoint=None, **overrides) -> DiT:
    if config:
        from mmengine.config import Config
        from mmengine.registry import init_default_scope

        from dgmn_mm.registry import MODELS
        cfg = Config.fromfile(config)
        init_default_scope(cfg.get('default_scope', 'mmengine'))
        bcfg = cfg.model.backbone.copy()
        bcfg.pop('init_cfg', None)
        bcfg.update(overrides)
        backbone = MODELS.build(bcfg)
    else:
        backbone = DiT(arch=arch, **overrides)
    if checkpoint:
        state = torch.load(checkpoint, map_location='cpu', weights_only=True)
        state = state.get('state_dict', state)
        if any(k.startswith('backbone.') for k in state):
            state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        backbone.load_state_dict(state, strict=True)
    return backbone


def brief_train(backbone: DiT, steps: int, size: int, mu: float, batch: int = 8, seed: int = 0, log=print):
    """Trains the backbone for ``steps`` AdamW steps on synthetic shapes: foreground/background from every
    output map (a 1x1 conv each) plus the budget loss (weight 2, target ``mu`` of the all-open FLOPs)."""
    rng = np.random.default_rng(seed)
    heads = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in backbone.num_features)
    budget = DiTBudgetLoss(mu=mu, loss_weight=2.0)
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(heads.parameters()), lr=5e-4, weight_decay=0.)
    backbone.train()
    for step in range(steps):
        imgs, masks = zip(*(synthetic_image(size, rng) for _ in range(batch)))
        x = torch.cat([to_tensor(i) for i in imgs])
        target = torch.from_numpy(np.stack(masks)).float()[:, None]
        outs = backbone(x)
        complexity = outs.complexity
        task = sum(F.binary_cross_entropy_with_logits(
            h(o), F.interpolate(target, size=o.shape[2:], mode='area')) for h, o in zip(heads, outs)) / len(outs)
        loss_c = budget(complexity)
        opt.zero_grad()
        (task + loss_c).backward()
        opt.step()
        if log and (step % 10 == 0 or step == steps - 1):
            ratio = float(budget.ratio(complexity).detach().mean())
            log(f'step {step:4d}  task {float(task):.3f}  budget {float(loss_c):.4f}  flops ratio {ratio:.3f}')
    backbone.eval()
    return backbone


@torch.no_grad()
def route(backbone: DiT, x: torch.Tensor) -> dict:
    backbone.eval()
    out = backbone(x)
    return dict(out.routing, complexity=out.complexity)


# --------------------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------------------
def draw(img: np.ndarray, backbone: DiT, routing: dict, out: str, title: str = ''):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    R, Cn = backbone.num_rows, backbone.num_columns
    fig, axes = plt.subplots(R, Cn + 1, figsize=(2.3 * (Cn + 1), 2.4 * R))
    size = img.shape[:2]
    for i in range(R):
        ax = axes[i, 0]
        ax.axis('off')
        if i == 0:
            ax.imshow(img)
            ax.set_title('input', fontsize=9)
        else:
            ax.text(0.5, 0.5, f'stride {4 * 2 ** i}', ha='center', va='center', fontsize=11)
        axes[i, 1].set_ylabel(f'stride {4 * 2 ** i}')
        for j in range(Cn):
            ax = axes[i, j + 1]
            ax.set_xticks([])
            ax.set_yticks([])
            if (i, j) not in routing['row']:
                ax.axis('off')
                continue
            H, W = routing['shapes'][i]
            gates = routing['row'][(i, j)][0]  # (D, N) of image 0: D = 1 per-node gate, or one per block
            skipped = 0.8 * (1.0 - gates.float().mean(0).view(H, W).numpy())  # 0.8 x the fraction skipped
            overlay = np.kron(skipped, np.ones((math.ceil(size[0] / H), math.ceil(size[1] / W))))[:size[0], :size[1]]
            shaded = img.astype(np.float32) * (1 - overlay[..., None]) + 255. * overlay[..., None]
            ax.imshow(shaded.astype(np.uint8))
            alive = bool(routing['alive'][(i, j)][0] > 0)
            text = f'({i},{j}) {100 * float(gates.mean()):.0f}% computed'
            if not alive:
                text = f'({i},{j}) dead'
            if (i, j) in routing['col']:
                text += '\nP ' + ('on' if float(routing['col'][(i, j)][0]) > 0 else 'off')
            ax.set_title(text, fontsize=8)
    for j in range(Cn):
        axes[R - 1, j + 1].set_xlabel(f'column {j}')
    fig.suptitle(title or 'DiT routing: white = skipped (identity path), clear = computed', fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def draw_space(backbone: DiT, out: str, img_shape=(224, 224), title: str = ''):
    """Draws the routing space: Fig. 2's full grid of 4 scales x ``num_columns`` columns, the nodes the
    backbone keeps (filled, with their blocks per node and their share of the all-open FLOPs), the row paths
    (green: transformer cells B_{i,j}; grey dashed: identity) and the column paths (orange: patch
    embeddings P_{i,j})."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    R, Cn = backbone.num_rows, backbone.num_columns
    shapes = backbone.row_shapes(img_shape)
    dense = backbone.dense_flops(img_shape)
    ids = set(backbone.node_ids)
    fig, ax = plt.subplots(figsize=(1.7 * Cn + 3.0, 5.4))
    ax.set_xlim(-1.3, Cn + 0.1)
    ax.set_ylim(-R + 0.4, 1.0)
    ax.set_aspect('equal')
    ax.axis('off')
    for i in range(R):
        ax.text(-1.2, -i, f'stride {4 * 2 ** i}\n{backbone.embed_dims[i]} ch', va='center', fontsize=9)
        for j in range(Cn):
            x, y = j, -i
            if (i, j) not in ids:
                ax.add_patch(plt.Circle((x, y), 0.16, fill=False, ls=':', color='0.6'))
                continue
            node = backbone.nodes[f'{i}_{j}']
            share = node.row_flops(shapes[i]) / dense
            ax.add_patch(plt.Circle((x, y), 0.16, color='#4a7fc1'))
            ax.text(x, y - 0.3, f'{len(node.blocks)} blk, {100 * share:.1f}%', ha='center', fontsize=7.5)
            if (i, j + 1) in ids:
                ax.annotate('', (x + 0.82, y), (x + 0.18, y),
                            arrowprops=dict(arrowstyle='->', color='#3a9a3a', lw=2))
                ax.annotate('', (x + 0.82, y + 0.05), (x + 0.18, y + 0.05),
                            arrowprops=dict(arrowstyle='->', color='0.55', ls='--', connectionstyle='arc3,rad=-0.5'))
            elif j == backbone.last_node[i]:
                ax.annotate('', (x + 0.6, y), (x + 0.18, y), arrowprops=dict(arrowstyle='->', color='#3a9a3a', lw=2))
                ax.text(x + 0.62, y, 'out', va='center', fontsize=8)
            if (i + 1, j) in ids:
                ax.annotate('', (x, y - 0.82), (x, y - 0.18), arrowprops=dict(arrowstyle='->', color='#e08a2c', lw=2))
    ax.text(-0.25, 0.35, 'stem', fontsize=8)
    for j in range(Cn):
        ax.text(j, 0.55, f'column {j}', ha='center', fontsize=9)
    fig.suptitle(title or (f'DiT-{(backbone.arch_name or "custom").upper()} routing space: {len(ids)} nodes, '
                           f'{sum(len(n.blocks) for n in backbone.nodes.values())} blocks, '
                           f'{dense / 1e9:.2f} GFLOPs all open at {img_shape[0]}x{img_shape[1]} '
                           '(dotted: nodes of the full grid we do not keep)'), fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv=None):
    args = parse_args(argv)
    if args.space:
        with torch.device('meta'):
            backbone = build_backbone(args.config, args.arch, None)
        out = draw_space(backbone, args.out, (args.size, args.size))
        print(f'wrote {out}')
        return out
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    overrides = dict(gate_momentum=0.9) if args.train_steps else {}
    backbone = build_backbone(args.config, args.arch, args.checkpoint, **overrides)
    if args.train_steps:
        brief_train(backbone, args.train_steps, args.size, args.mu, args.batch, args.seed)
    if args.img:
        img = load_image(args.img, args.size)
    else:
        img = synthetic_image(args.size, np.random.default_rng(args.seed + 1000))[0]
    routing = route(backbone, to_tensor(img))
    flops = float(routing['complexity']['flops'][0])
    dense = routing['complexity']['dense_flops']
    title = (f'DiT routing ({"trained %d steps" % args.train_steps if args.train_steps else "initial weights"}'
             f'{", " + os.path.basename(args.checkpoint) if args.checkpoint else ""}): '
             f'{flops / 1e9:.2f} / {dense / 1e9:.2f} GFLOPs; white = skipped')
    draw(img, backbone, routing, args.out, title)
    print(f'wrote {args.out} ({flops / 1e9:.3f} GFLOPs of {dense / 1e9:.3f} all open)')
    return args.out


if __name__ == '__main__':
    main()

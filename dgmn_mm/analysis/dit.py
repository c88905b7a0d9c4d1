"""DiT (dynamic token routing) analysis: hard-gate FLOPs over a set of images, and the speed of real skipping.

**Average FLOPs with hard gates** (the FLOPs column of the DiT paper's tables): in eval mode the gates are hard
(argmax with the momentum weights, Eq. 3 of the DiT paper), so the work of the backbone depends on the image.
:func:`iter_images` yields backbone inputs one image at a time (a config's dataloader through the data
preprocessor, batch 1 so no padding to a common batch size, or random images of one size), and
:func:`average_gate_flops` collects, for every image, the FLOPs its gates used (multiply-adds of the blocks, patch
embeddings, gates and stem: the ``complexity`` the backbone's output carries, Eq. 5 with hard gates), with
their mean, standard deviation, min and max, next to the all-gates-open FLOPs and the PVTv2 baseline of the
same input size. Only the backbone is counted (the paper's classification FLOPs add a 0.5 MFLOP head).

**Skipping speed** (:func:`benchmark_skipping`): the row gates are replaced by random masks that skip each
token with a given probability (``row_gate='random'``, ``fixed_keep = 1 - fraction``, one gate per node; the
column gates stay open so the amount of work only depends on the row gates). For each fraction the eval-mode
forward is timed with the sparse path (gather -> compute -> scatter, ``sparse_inference=True``) and with the
masked dense path (every token computed, then masked), the two alternating (:func:`time_pair`); the rows also
give the FLOPs the hard gates account for and the largest difference between the two paths' outputs on the
same masks.
"""
import statistics
import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import init_default_scope

__all__ = ['build_dit_model', 'iter_images', 'average_gate_flops', 'time_pair', 'benchmark_skipping',
           'format_skipping_table']


def build_dit_model(cfg: Config, checkpoint: Optional[str] = None) -> nn.Module:
    """``cfg.model`` built in the config's scope (PyTorch's default initialisation, no ``init_weights``),
    the checkpoint loaded if given, in eval mode (hard gates)."""
    import dgmn_mm  # noqa: F401  (registers DiT and the loss-adding models)
    from dgmn_mm.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model = MODELS.build(cfg.model)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.eval()


def iter_images(cfg: Config, model: nn.Module, split: str = 'val', num_images: int = 100,
                synthetic: Optional[Sequence[int]] = None, seed: int = 0) -> Iterator[torch.Tensor]:
    """Yields (1, 3, H, W) backbone inputs (after the data preprocessor).

    Args:
        cfg (Config): the config (its ``{split}_dataloader`` is used unless ``synthetic``).
        model (nn.Module): the model whose ``data_preprocessor`` prepares the images.
        split (str): 'val' or 'test'.
        num_images (int): how many images.
        synthetic (Sequence[int], optional): (H, W) of random images instead of the dataset.
        seed (int): seed of the random images.
    """
    if split not in ('val', 'test'):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if num_images < 1:
        raise ValueError(f'num_images must be >= 1, got {num_images}')
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
def average_gate_flops(model: nn.Module, images: Iterable[torch.Tensor]) -> Dict[str, float]:
    """Statistics of the hard-gate FLOPs of a DiT model (or its ``backbone``) over ``images``.

    Returns:
        dict: ``num_images``, ``mean``, ``std`` (population), ``min``, ``max`` of the per-image FLOPs,
        ``dense`` (all gates open) and ``pvtv2`` (the PVTv2 baseline of the same input size; NaN if the arch
        has none).
    """
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


def time_pair(fn_a: Callable[[], object], fn_b: Callable[[], object], runs: int,
              warmup: int) -> Tuple[Tuple[float, float], Tuple[float, float]]:
    """(median, minimum) seconds of two functions, run alternately (a, b, a, b, ...) so that a change of the
    machine's load hits both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(runs):
        t = time.perf_counter()
        fn_a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fn_b()
        tb.append(time.perf_counter() - t)
    return (statistics.median(ta), min(ta)), (statistics.median(tb), min(tb))


def benchmark_skipping(arch: Union[str, dict] = 'b1', size: int = 224, batch: int = 1,
                       fractions: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 0.9), runs: int = 7, warmup: int = 2,
                       seed: int = 0) -> List[Dict[str, float]]:
    """Sparse against masked-dense DiT inference for each skip probability in ``fractions``.

    Args:
        arch (str | dict): a DiT arch name ('b1'..'b5') or an arch dict.
        size (int): square input size.
        batch (int): batch size.
        fractions (Sequence[float]): skip probabilities of the random row gates, each in [0, 1].
        runs (int): timed runs (median and minimum reported).
        warmup (int): untimed runs first.
        seed (int): seed of the model and of the masks.

    Returns:
        list[dict]: one row per fraction: ``fraction``, ``skipped`` (measured), ``gflops`` (hard gates),
        ``dense_gflops``, ``ms_sparse``, ``ms_dense`` (medians), ``min_ms_sparse``, ``min_ms_dense`` and
        ``max_abs_diff`` (sparse vs dense outputs on the same masks).
    """
    from dgmn_mm.models.backbones.dit import DiT
    if any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ValueError(f'fractions must lie in [0, 1], got {list(fractions)}')
    torch.manual_seed(seed)
    model = DiT(arch=arch, row_gate='random', col_gate='open').eval()
    x = torch.randn(batch, 3, size, size)
    dense_flops = model.dense_flops((size, size))
    rows = []
    for frac in fractions:
        for gate in model.gates():
            if gate.mode == 'random':
                gate.fixed_keep = 1.0 - frac

        def run(sparse):
            model.sparse_inference = sparse
            with torch.inference_mode():
                return model(x)

        (t_sparse, m_sparse), (t_dense, m_dense) = time_pair(lambda: run(True), lambda: run(False), runs, warmup)
        # same masks for both paths: reseed before each
        torch.manual_seed(seed + 1)
        out_s = run(True)
        flops = float(out_s.complexity['flops'].mean())
        routed = torch.cat([g.flatten() for g in out_s.routing['row'].values()]).mean().item()
        torch.manual_seed(seed + 1)
        out_d = run(False)
        diff = max((a - b).abs().max().item() for a, b in zip(out_s, out_d))
        rows.append(dict(fraction=frac, skipped=1.0 - routed, gflops=flops / 1e9, dense_gflops=dense_flops / 1e9,
                         ms_sparse=t_sparse * 1e3, ms_dense=t_dense * 1e3, min_ms_sparse=m_sparse * 1e3,
                         min_ms_dense=m_dense * 1e3, max_abs_diff=diff))
    return rows


def format_skipping_table(rows: List[Dict[str, float]], header: bool = True) -> str:
    """Markdown table of :func:`benchmark_skipping` rows."""
    lines = []
    if header:
        lines.append('| skip prob | skipped tokens | GFLOPs (hard gates) / all open | dense-masked ms (min) | '
                     'sparse ms (min) | sparse / dense (medians) | max abs diff |')
        lines.append('|---|---|---|---|---|---|---|')
    for r in rows:
        lines.append(f"| {r['fraction']:.2f} | {r['skipped']:.3f} | {r['gflops']:.2f} / {r['dense_gflops']:.2f} | "
                     f"{r['ms_dense']:.1f} ({r['min_ms_dense']:.1f}) | "
                     f"{r['ms_sparse']:.1f} ({r['min_ms_sparse']:.1f}) | "
                     f"{r['ms_sparse'] / r['ms_dense']:.2f} | "
                     f"{r['max_abs_diff']:.1e} |")
    return '\n'.join(lines)

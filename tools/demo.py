#!/usr/bin/env python
"""`make demo`: train DGMN2-Tiny Mask R-CNN on the synthetic shapes, evaluate it with the COCO metric and
draw its predictions - on a CPU, with nothing to download.

Steps:
  1. write the synthetic data to ``data/demo`` (skipped when already there; ``tools/make_demo_data.py``);
  2. train ``configs/mmdet/demo/mask-rcnn_dgmn2-tiny_fpn_synthetic.py`` with mmengine's ``Runner``
     (work dir ``work_dirs/demo``; a log line every 10 iterations);
  3. evaluate on the 64 val images with mmdet's ``CocoMetric`` (pycocotools' COCOeval, bbox and segm);
  4. draw ground truth | predictions for a few val images to ``work_dirs/demo/vis/``;
  5. print the box and mask AP and write them to ``work_dirs/demo/demo_metrics.json``.

``--quick`` trains a few iterations on a handful of images (for tests); ``--max-epochs`` shortens or
lengthens the full run.
"""
import argparse
import json
import os
import os.path as osp
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run from a clone without installing

DEFAULT_CONFIG = osp.join(REPO_ROOT, 'configs', 'mmdet', 'demo', 'mask-rcnn_dgmn2-tiny_fpn_synthetic.py')
QUICK_SIZES = dict(coco_train=4, coco_val=2)


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default=DEFAULT_CONFIG)
    parser.add_argument('--data-root', default=None,
                        help='synthetic data directory (default: data/demo, or data/demo_quick with --quick)')
    parser.add_argument('--work-dir', default=None,
                        help='default: work_dirs/demo (work_dirs/demo_quick with --quick)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the data and of the training run')
    parser.add_argument('--max-epochs', type=int, default=None, help='override the config (4 epochs of 100 iterations)')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: 4 train / 2 val images, 1 epoch of 2 iterations')
    parser.add_argument('--num-vis', type=int, default=8, help='number of val images to draw')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='override config entries, e.g. optim_wrapper.optimizer.lr=2e-3')
    parser.add_argument('--score-thr', type=float, default=0.3, help='score threshold of the drawn predictions')
    return parser.parse_args(argv)


def build_cfg(args):
    from mmengine.config import Config

    from dgmn_mm.demo_data import DEFAULT_SIZES

    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    data_root = osp.abspath(args.data_root or osp.join(REPO_ROOT, 'data', 'demo_quick' if args.quick else 'demo'))
    work_dir = osp.abspath(args.work_dir or osp.join(REPO_ROOT, 'work_dirs', 'demo_quick' if args.quick else 'demo'))
    coco_root = osp.join(data_root, 'coco') + os.sep
    for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
        loader.dataset.data_root = coco_root
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        evaluator.ann_file = osp.join(coco_root, 'annotations', 'instances_val.json')
    cfg.work_dir = work_dir
    cfg.randomness = dict(seed=args.seed)

    max_epochs = args.max_epochs or (1 if args.quick else cfg.train_cfg.max_epochs)
    if args.quick:
        for loader in (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader):
            loader.batch_size = 2
            loader.num_workers = 0
            loader.persistent_workers = False
        cfg.default_hooks.logger.interval = 1
        cfg.log_processor.window_size = 1
    cfg.train_cfg.max_epochs = max_epochs
    cfg.train_cfg.val_interval = 1
    cfg.train_cfg.val_begin = max_epochs + 1  # validate once, after training, through runner.val()
    cfg.default_hooks.checkpoint.interval = max_epochs
    # the schedule follows the number of epochs: warm-up over the first epoch at most, then cosine
    for sched in cfg.param_scheduler:
        if sched.type == 'CosineAnnealingLR':
            sched.begin = min(sched.begin, max_epochs - 1)
            sched.end = max_epochs
    sizes = dict(QUICK_SIZES) if args.quick else {k: DEFAULT_SIZES[k] for k in QUICK_SIZES}
    return cfg, data_root, sizes


# --------------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------------
def _panel(img_rgb, bboxes, labels, masks, scores, classes, palette, scale=3, title=''):
    """Upscaled copy of an RGB image with translucent masks, boxes and 'class score' labels."""
    import cv2
    import numpy as np

    h, w = img_rgb.shape[:2]
    big = cv2.resize(img_rgb, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST).astype(np.float32)
    for i in range(len(bboxes)):
        colour = np.asarray(palette[int(labels[i]) % len(palette)], np.float32)
        if masks is not None:
            m = cv2.resize(masks[i].astype(np.uint8), (w * scale, h * scale),
                           interpolation=cv2.INTER_NEAREST).astype(bool)
            big[m] = 0.45 * big[m] + 0.55 * colour
    big = big.clip(0, 255).astype(np.uint8)
    big = np.ascontiguousarray(big)
    for i in range(len(bboxes)):
        colour = tuple(int(c) for c in palette[int(labels[i]) % len(palette)])
        x0, y0, x1, y1 = (np.asarray(bboxes[i], np.float32) * scale).round().astype(int).tolist()
        cv2.rectangle(big, (x0, y0), (x1, y1), colour, 2)
        text = classes[int(labels[i])] + ('' if scores is None else f' {float(scores[i]):.2f}')
        ty = max(y0 - 4, 12)
        cv2.putText(big, text, (x0 + 1, ty + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(big, text, (x0, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    if title:
        cv2.putText(big, title, (5, h * scale - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(big, title, (5, h * scale - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return big


def draw_predictions(runner, out_dir, num, score_thr):
    """Run the trained model on the first ``num`` val images; write ``val_XXX.png`` (ground truth | prediction)
    and ``predictions.png`` (all of them in a grid). Returns the written paths."""
    import cv2
    import numpy as np
    import torch

    os.makedirs(out_dir, exist_ok=True)
    dataset = runner.val_dataloader.dataset
    classes = dataset.metainfo['classes']
    palette = dataset.metainfo.get('palette') or [(255, 0, 0), (0, 128, 255), (0, 200, 0), (255, 170, 0)]
    model = runner.model
    model.eval()
    paths, panels = [], []
    for idx in range(min(num, len(dataset))):
        data = dataset[idx]
        with torch.no_grad():
            sample = model.test_step(dict(inputs=[data['inputs']], data_samples=[data['data_samples']]))[0]
        img = cv2.cvtColor(cv2.imread(sample.img_path), cv2.COLOR_BGR2RGB)
        gt = sample.gt_instances
        gt_masks = gt.masks.to_ndarray() if 'masks' in gt else None
        pred = sample.pred_instances
        keep = pred.scores >= score_thr
        pred = pred[keep]
        left = _panel(img, gt.bboxes.numpy() if hasattr(gt.bboxes, 'numpy') else gt.bboxes.tensor.numpy(),
                      gt.labels.numpy(), gt_masks, None, classes, palette, title='ground truth')
        right = _panel(img, pred.bboxes.numpy(), pred.labels.numpy(),
                       pred.masks.numpy() if 'masks' in pred else None, pred.scores.numpy(), classes, palette,
                       title=f'DGMN2-Tiny (score >= {score_thr})')
        sep = np.full((left.shape[0], 6, 3), 255, np.uint8)
        panel = np.concatenate([left, sep, right], axis=1)
        path = osp.join(out_dir, f'val_{idx:03d}.png')
        cv2.imwrite(path, cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        paths.append(path)
        panels.append(panel)
    if panels:
        cols = 2
        blank = np.full_like(panels[0], 255)
        rows = []
        for r in range(0, len(panels), cols):
            row = panels[r:r + cols] + [blank] * (cols - len(panels[r:r + cols]))
            rows.append(np.concatenate(sum([[p, np.full((p.shape[0], 12, 3), 255, np.uint8)] for p in row], [])[:-1],
                                       axis=1))
        grid = np.concatenate(sum([[r, np.full((12, r.shape[1], 3), 255, np.uint8)] for r in rows], [])[:-1], axis=0)
        path = osp.join(out_dir, 'predictions.png')
        cv2.imwrite(path, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def main(argv=None):
    args = parse_args(argv)
    t_start = time.time()

    from dgmn_mm.demo_data import make_demo_data

    cfg, data_root, sizes = build_cfg(args)
    print(f'[demo] 1/4 synthetic data in {data_root}', flush=True)
    make_demo_data(data_root, seed=args.seed, sizes=sizes,
                   parts=('coco', ) if args.quick else ('coco', 'cityscapes', 'imagenet'))

    from mmengine.runner import Runner
    print(f'[demo] 2/4 training {osp.relpath(args.config, REPO_ROOT) if args.config.startswith(REPO_ROOT) else args.config}'
          f' for {cfg.train_cfg.max_epochs} epoch(s); logs in {cfg.work_dir}', flush=True)
    runner = Runner.from_cfg(cfg)
    t_train = time.time()
    runner.train()
    t_train = time.time() - t_train

    print('[demo] 3/4 COCO evaluation (pycocotools) on the val split', flush=True)
    t_val = time.time()
    metrics = runner.val()
    t_val = time.time() - t_val

    print(f'[demo] 4/4 drawing predictions to {osp.join(cfg.work_dir, "vis")}', flush=True)
    vis_paths = draw_predictions(runner, osp.join(cfg.work_dir, 'vis'), args.num_vis, args.score_thr)

    total = time.time() - t_start
    summary = dict(
        config=args.config, seed=args.seed, max_epochs=cfg.train_cfg.max_epochs, quick=args.quick,
        bbox_mAP=metrics.get('coco/bbox_mAP'), bbox_mAP_50=metrics.get('coco/bbox_mAP_50'),
        segm_mAP=metrics.get('coco/segm_mAP'), segm_mAP_50=metrics.get('coco/segm_mAP_50'),
        metrics={k: float(v) for k, v in metrics.items()}, train_seconds=round(t_train, 1),
        val_seconds=round(t_val, 1), total_seconds=round(total, 1), pictures=vis_paths)
    with open(osp.join(cfg.work_dir, 'demo_metrics.json'), 'w') as f:
        json.dump(summary, f, indent=1)

    def pct(v):
        return 'n/a' if v is None else f'{100 * v:.1f}'

    bar = '=' * 72
    print(bar)
    print(f'DGMN2-Tiny Mask R-CNN on the synthetic shapes (val, {len(runner.val_dataloader.dataset)} images), '
          f'COCO metric (pycocotools), 0-100:')
    print(f'  box  AP = {pct(summary["bbox_mAP"])}   (AP50 {pct(summary["bbox_mAP_50"])})')
    print(f'  mask AP = {pct(summary["segm_mAP"])}   (AP50 {pct(summary["segm_mAP_50"])})')
    print(f'  pictures: {osp.join(cfg.work_dir, "vis", "predictions.png")} (+ {len(vis_paths) - 1} single images)')
    print(f'  time: {total / 60:.1f} min total ({t_train:.0f} s training, {t_val:.0f} s evaluation)')
    print(bar, flush=True)
    return summary


if __name__ == '__main__':
    main()

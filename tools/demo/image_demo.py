"""Run a config (and optionally a checkpoint) on one image and save the picture of its predictions.

Usage::

    python tools/demo/image_demo.py CONFIG [CHECKPOINT] IMG [--out-dir DIR] [--device cpu]
        [--score-thr 0.3] [--cfg-options k=v ...]

The codebase is taken from the config (``default_scope`` or its ``mmdet::`` / ``mmseg::`` /
``mmpretrain::`` bases) and the image goes through that codebase's own inferencer:

- detection / instance segmentation: ``mmdet.apis.DetInferencer`` (boxes, masks, labels, scores);
- semantic segmentation: ``mmseg.apis.MMSegInferencer`` (the class map blended over the image);
- classification: ``mmpretrain.apis.ImageClassificationInferencer`` (the top class and its score).

The picture is written to ``DIR/vis/<image name>.{jpg,png}`` (default ``DIR = outputs``) and its path is
printed. Without CHECKPOINT the model keeps its initial (random) weights, which shows the pipeline works
but draws meaningless predictions. A checkpoint may be one written by training, a published one
(``tools/model_converters/publish_model.py``) or an official DGMN2 classifier converted by
``tools/model_converters/dgmn2_official_to_mm.py``.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config, DictAction

IMG_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Draw the predictions of a config on one image')
    parser.add_argument('config', help='config file')
    parser.add_argument('rest', nargs='+', metavar='[CHECKPOINT] IMG', help='optional checkpoint, then the image')
    parser.add_argument('--out-dir', default='outputs', help='output folder (the picture goes to OUT_DIR/vis)')
    parser.add_argument('--device', default=None, help="device, e.g. 'cpu' or 'cuda:0' (default: cuda if any)")
    parser.add_argument('--score-thr', type=float, default=0.3, help='detection score threshold to draw')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = parser.parse_args(argv)
    if len(args.rest) == 1:
        args.checkpoint, args.img = None, args.rest[0]
    elif len(args.rest) == 2:
        args.checkpoint, args.img = args.rest
    else:
        parser.error(f'expected [CHECKPOINT] IMG after CONFIG, got {args.rest}')
    if not osp.isfile(args.img):
        parser.error(f'IMG {args.img!r} is not a file')
    if osp.splitext(args.img)[1].lower() not in IMG_EXTS:
        parser.error(f'IMG must be one of {IMG_EXTS}, got {args.img!r}')
    if args.checkpoint is not None and not (osp.isfile(args.checkpoint) or '://' in args.checkpoint):
        parser.error(f'CHECKPOINT {args.checkpoint!r} is not a file')
    return args


def run(config, img, checkpoint=None, out_dir='outputs', device=None, score_thr=0.3, cfg_options=None):
    """Run the codebase's inferencer; returns (codebase, path of the written picture)."""
    sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))
    import dgmn_mm  # noqa: F401  (registers the models; weights_only allow-list)
    from dgmn_mm.engine import detect_codebase, init_codebase

    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    codebase = detect_codebase(cfg, config)
    init_codebase(cfg, codebase)  # the codebase's register_all_modules and default scope
    vis_dir = osp.join(out_dir, 'vis')
    name = osp.splitext(osp.basename(img))[0]
    if codebase == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=cfg, weights=checkpoint, device=device, show_progress=False)
        inferencer(img, out_dir=out_dir, pred_score_thr=score_thr, no_save_pred=False)
        out = osp.join(vis_dir, osp.basename(img))
    elif codebase == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=cfg, weights=checkpoint, device=device)
        inferencer(img, out_dir=out_dir, img_out_dir='vis', pred_out_dir='pred')
        out = osp.join(vis_dir, osp.basename(img))
    elif codebase == 'mmpretrain':
        from mmpretrain.apis import ImageClassificationInferencer
        inferencer = ImageClassificationInferencer(model=cfg, pretrained=checkpoint or False, device=device)
        os.makedirs(out_dir, exist_ok=True)
        result = inferencer(img, show_dir=vis_dir)[0]
        label = result.get('pred_class', result['pred_label'])  # class names only when the model has them
        print(f"top-1: {label} (score {result['pred_score']:.3f})")
        out = osp.join(vis_dir, name + '.png')
    else:  # detect_codebase only returns the three above
        raise ValueError(f'unsupported codebase {codebase!r}')
    if not osp.isfile(out):
        raise RuntimeError(f'the {codebase} inferencer did not write {out}')
    return codebase, out


def main(argv=None):
    args = parse_args(argv)
    codebase, out = run(args.config, args.img, args.checkpoint, args.out_dir, args.device, args.score_thr,
                        args.cfg_options)
    print(f'{codebase}: {out}')
    return out


if __name__ == '__main__':
    main()

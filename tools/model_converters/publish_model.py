"""Publish a checkpoint for release (OpenMMLab convention).

Usage::

    python tools/model_converters/publish_model.py IN_FILE OUT_FILE

Keeps the model weights and plain metadata (config text, dataset meta, epoch/iter, versions), drops the
optimizer, parameter schedulers and message hub, and writes ``OUT_FILE`` with the first 8 hex digits of
its sha256 appended: ``work_dirs/x/epoch_12.pth -> out/mask-rcnn_dgmn2-tiny_fpn_1x_coco.pth`` gives
``out/mask-rcnn_dgmn2-tiny_fpn_1x_coco-1a2b3c4d.pth``. The result loads with
``torch.load(path, weights_only=True)`` without importing dgmn_mm, so the upstream inferencers
(``DetInferencer(model=None, weights=path)``, ``MMSegInferencer``, ``ImageClassificationInferencer``) read it
as they read mmdet's own releases. See :mod:`dgmn_mm.apis.publish`.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..')))

from dgmn_mm.apis.publish import publish_checkpoint  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Publish a checkpoint: weights + plain meta, sha256 in name')
    parser.add_argument('in_file', help='input checkpoint (written by mmengine or a converter)')
    parser.add_argument('out_file', help='output path; "-<sha256[:8]>" is inserted before ".pth"')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    final = publish_checkpoint(args.in_file, args.out_file)
    print(final)
    return final


if __name__ == '__main__':
    main()

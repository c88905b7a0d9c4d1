"""Export a dgmn_mm model (mmpretrain classifier, mmseg segmentor, mmdet detector) to ONNX and verify it.

Usage::

    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT] --shape H W [--dynamic] [--opset N]
        [--verify] [--verify-shapes H W [H W ...]] [--tolerance 1e-4] [--out FILE] [--cfg-options k=v ...]

What is exported (the input is the normalised image batch, i.e. after the model's data preprocessor):

* classifiers (``BaseClassifier``): ``model(x, mode='tensor')`` -> class logits (B, num_classes);
* segmentors (``BaseSegmentor``): ``model._forward(x)`` (whole image) -> seg logits of the decode head;
* detectors (``BaseDetector``): ``model.extract_feat(x)`` -> the backbone + neck feature maps. The heads'
  post-processing (NMS, RoI stages on data-dependent proposals) is not a fixed graph; export it with
  MMDeploy if needed.
* anything else: ``model(x)`` (e.g. a bare backbone config), all tensor outputs.

The exporter is torch's dynamo-based ``torch.onnx.export(..., dynamo=True)``: DGMN2's attention records
standard ops only (GridSample at opset >= 16, MatMul/Einsum, Softmax, Resize) and its RelPos indices are
computed from the input size, so with ``--dynamic`` (batch, height and width dynamic) the graph is correct
at every input size. The TorchScript exporter (``dynamo=False``) refuses DGMN2 with an error instead of
writing a graph that is only right at the traced size.

``--verify`` runs the file with onnxruntime (CPU) at the export shape and, with ``--dynamic``, at the
``--verify-shapes`` (default: two other sizes, one of them odd), prints the largest absolute difference to
PyTorch for each and exits with status 1 when one exceeds ``--tolerance``. Without ``--verify`` the file is
still checked at the export size (a ``--dynamic`` one also at one other, odd size) and removed with an error
if it differs.

mmseg models: while exporting, mmseg's ``resize`` is called with ``warning=False`` and mmseg's ``Upsample``
computes its output size in integer arithmetic (both would otherwise turn a dynamic size into the traced
number); see ``docs/deployment.md``.
"""
import argparse
import contextlib
import copy
import functools
import logging
import os
import os.path as osp
import sys
import time
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn


# ------------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------------
def build_model(config: str, checkpoint: str = None, cfg_options: dict = None) -> nn.Module:
    """The config's model in eval mode (SyncBN -> BN), weights from ``checkpoint`` when given (otherwise
    its random initialisation; 'Pretrained' init_cfgs are ignored)."""
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope

    import dgmn_mm  # noqa: F401
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model_cfg = copy.deepcopy(cfg.model)
    from dgmn_mm.analysis.complexity import drop_pretrained
    drop_pretrained(model_cfg)
    model = MODELS.build(model_cfg)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    if checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu')
    return revert_sync_batchnorm(model).eval()


def model_kind(model: nn.Module) -> str:
    names = {c.__name__ for c in type(model).__mro__}
    for kind, base in (('detector', 'BaseDetector'), ('segmentor', 'BaseSegmentor'),
                       ('classifier', 'BaseClassifier')):
        if base in names:
            return kind
    return 'other'


class ExportWrapper(nn.Module):
    """``forward(x)`` -> tuple of tensors: the part of ``model`` that is exported (see the module doc)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.kind = model_kind(model)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.kind == 'classifier':
            out = self.model(x, mode='tensor')
        elif self.kind == 'segmentor':
            out = self.model._forward(x)
        elif self.kind == 'detector':
            out = self.model.extract_feat(x)
        else:
            out = self.model(x)
        if isinstance(out, torch.Tensor):
            return (out, )
        flat = []
        for o in (out if isinstance(out, (list, tuple)) else [out]):
            flat.extend(o if isinstance(o, (list, tuple)) else [o])
        return tuple(flat)


# ------------------------------------------------------------------------------------------------------
# export and verification
# ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _mmseg_resize_without_warning():
    """mmseg's ``resize(..., warning=True)`` turns the sizes into Python ints to decide whether to warn about
    ``align_corners``, which fixes a dynamic height/width to the traced value. While exporting, every
    ``resize`` imported by an mmseg module is called with ``warning=False`` (same computation)."""
    try:
        from mmseg.models.utils import wrappers
    except ImportError:
        yield
        return
    original = wrappers.resize

    @functools.wraps(original)
    def quiet(*args, **kwargs):
        kwargs['warning'] = False
        return original(*args, **kwargs)

    patched = [m for name, m in list(sys.modules.items())
               if name.startswith('mmseg') and m is not None and getattr(m, 'resize', None) is original]
    for m in patched:
        m.resize = quiet
    try:
        yield
    finally:
        for m in patched:
            m.resize = original


@contextlib.contextmanager
def _mmseg_upsample_symbolic_size():
    """mmseg's ``Upsample`` (the scale heads of the Semantic FPN head) computes its output size as
    ``int(h * scale_factor)``. Under ``torch.export`` ``int()`` of a symbolic size times a float is recorded
    as the traced number, without an error: a dynamic graph then upsamples every input to the traced size
    (measured: the Semantic FPN head 0.02-0.17 off at other sizes). While exporting, a factor that is an
    integer or a fraction with a power-of-two denominator <= 2 ** 16 (2.0, 0.5, 1.5, ...) is applied in
    integer arithmetic, ``h * num // den``, which is the same number for every h and stays symbolic; other
    factors keep mmseg's code."""
    try:
        from mmseg.models.utils import wrappers
    except ImportError:
        yield
        return
    cls = wrappers.Upsample
    original = cls.forward

    @functools.wraps(original)
    def forward(self, x):
        if self.size or not self.scale_factor:
            return original(self, x)
        factors = self.scale_factor if isinstance(self.scale_factor, tuple) else (self.scale_factor, ) * 2
        ratios = [float(f).as_integer_ratio() for f in factors]
        if len(ratios) != 2 or any(den > 2 ** 16 for _, den in ratios):
            return original(self, x)
        size = [t * num // den for t, (num, den) in zip(x.shape[-2:], ratios)]
        return wrappers.resize(x, size, None, self.mode, self.align_corners, warning=False)

    cls.forward = forward
    try:
        yield
    finally:
        cls.forward = original


def dynamic_input_dims(onnx_file: str) -> List[bool]:
    """Which dims of the first graph input are symbolic in the saved file."""
    import onnx
    inp = onnx.load(onnx_file, load_external_data=False).graph.input[0]
    return [not d.HasField('dim_value') for d in inp.type.tensor_type.shape.dim]


def export(module: nn.Module, shape: Sequence[int], out: str, dynamic: bool = False, opset: int = 18,
           batch_size: int = 1) -> None:
    """Export ``module(x)`` for x of (batch_size, 3, H, W) to ``out`` with the dynamo exporter.

    With ``dynamic`` batch, height and width are dynamic (traced at batch >= 2: a traced batch of 1 would be
    specialised)."""
    if opset < 16:
        raise ValueError(f'opset must be >= 16 (ONNX GridSample), got {opset}')
    h, w = shape
    x = torch.randn(max(batch_size, 2) if dynamic else batch_size, 3, h, w)
    kwargs = {}
    if dynamic:
        Dim = torch.export.Dim
        kwargs['dynamic_shapes'] = ({0: Dim('batch', min=1, max=1024), 2: Dim('height', min=8, max=8192),
                                     3: Dim('width', min=8, max=8192)}, )
    with torch.no_grad(), _mmseg_resize_without_warning(), _mmseg_upsample_symbolic_size():
        program = torch.onnx.export(module, (x, ), dynamo=True, opset_version=opset, verbose=False, **kwargs)
    program.save(out)
    if dynamic:
        dims = dynamic_input_dims(out)
        fixed = [name for name, dyn in zip(('batch', 'channels', 'height', 'width'), dims) if not dyn]
        if set(fixed) - {'channels'}:
            raise RuntimeError(
                f'the exported graph fixed the input {"/".join(d for d in fixed if d != "channels")} to the '
                f'traced value (some code of the model turns sizes into Python numbers): it would be wrong at '
                f'other sizes. Export without --dynamic at the size you deploy, or fix that code.')


def verify(module: nn.Module, onnx_file: str, shapes: Sequence[Sequence[int]], batch_size: int = 1,
           seed: int = 0) -> List[Tuple[tuple, float]]:
    """Max abs difference between onnxruntime and PyTorch for a random input of each (B, 3, H, W) shape."""
    import onnxruntime as ort
    sess = ort.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    name = sess.get_inputs()[0].name
    g = torch.Generator().manual_seed(seed)
    results = []
    for h, w in shapes:
        x = torch.randn(batch_size, 3, h, w, generator=g)
        with torch.no_grad():
            ref = module(x)
        got = sess.run(None, {name: x.numpy()})
        if len(got) != len(ref):
            raise RuntimeError(f'onnxruntime returned {len(got)} outputs, PyTorch {len(ref)}')
        diff = 0.
        for r, o in zip(ref, got):
            if tuple(r.shape) != tuple(o.shape):
                raise RuntimeError(f'output shape {tuple(o.shape)} != PyTorch {tuple(r.shape)} at {h}x{w}')
            diff = max(diff, float(np.abs(r.numpy() - o).max()) if r.numel() else 0.)
        results.append(((batch_size, 3, h, w), diff))
    return results


def default_verify_shapes(shape: Sequence[int]) -> List[Tuple[int, int]]:
    h, w = shape
    return [(h + 32, w + 64), (h + 33, w + 35)]  # a larger and an odd size


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Export a dgmn_mm model to ONNX (dynamo exporter) and verify it')
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', default=None, help='weights (default: random initialisation)')
    p.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'), help='input size to trace')
    p.add_argument('--dynamic', action='store_true', help='dynamic batch, height and width')
    p.add_argument('--opset', type=int, default=18, help='ONNX opset (>= 16); default 18')
    p.add_argument('--out', default=None, help='output file (default: <config name>.onnx)')
    p.add_argument('--verify', action='store_true', help='compare onnxruntime with PyTorch')
    p.add_argument('--verify-shapes', type=int, nargs='+', default=None, metavar='H W',
                   help='extra H W pairs to verify with --dynamic (default: two other sizes)')
    p.add_argument('--batch-size', type=int, default=1, help='batch of the verification inputs')
    p.add_argument('--tolerance', type=float, default=1e-4, help='max abs difference allowed by --verify')
    p.add_argument('--cfg-options', nargs='+', default=None, help='override config settings (k=v)')
    args = p.parse_args(argv)
    if args.verify_shapes is not None and len(args.verify_shapes) % 2:
        p.error('--verify-shapes takes H W pairs')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg_options = None
    if args.cfg_options:
        from mmengine.config import DictAction
        ns = argparse.Namespace()
        DictAction(option_strings=[], dest='o')(None, ns, args.cfg_options)
        cfg_options = ns.o
    model = build_model(args.config, args.checkpoint, cfg_options)
    module = ExportWrapper(model).eval()
    out = args.out or osp.splitext(osp.basename(args.config))[0] + '.onnx'
    t0 = time.time()
    export(module, args.shape, out, args.dynamic, args.opset)
    print(f'exported {module.kind} ({type(model).__name__}) to {out} in {time.time() - t0:.1f} s '
          f"(opset {args.opset}, {'dynamic batch/height/width' if args.dynamic else 'static shape'})")
    if not args.verify:
        # the file is only kept if onnxruntime agrees with PyTorch at the export size (and, for a dynamic graph,
        # at another size): an export that is not right is refused, never left behind
        shapes = [tuple(args.shape)] + (default_verify_shapes(args.shape)[1:2] if args.dynamic else [])
        for shp, diff in verify(module, out, shapes, args.batch_size):
            if diff > args.tolerance:
                os.remove(out)
                hint = ('some part of the model is not size-generic; export without --dynamic at the size you '
                        'deploy' if args.dynamic and shp != tuple(args.shape) else
                        'some operator of this model is not exported faithfully')
                raise RuntimeError(f'the export differs from PyTorch by {diff:.3g} at {shp} (tolerance '
                                   f'{args.tolerance:g}): {hint}. File removed.')
            print(f'check {shp}: max abs diff {diff:.3g} (ok)')
        return 0
    shapes = [tuple(args.shape)]
    if args.dynamic:
        vs = args.verify_shapes
        shapes += ([(vs[i], vs[i + 1]) for i in range(0, len(vs), 2)] if vs else default_verify_shapes(args.shape))
    ok = True
    for shp, diff in verify(module, out, shapes, args.batch_size):
        good = diff <= args.tolerance
        ok &= good
        print(f'verify {shp}: max abs diff {diff:.3g} ({"ok" if good else "FAILED"}, tolerance {args.tolerance:g})')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

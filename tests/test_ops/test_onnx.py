"""ONNX export of DGMN2 is right at every input size, or refused.

* The dynamo exporter (``torch.onnx.export(..., dynamo=True)``, torch's default) with dynamic batch, height
  and width: onnxruntime equals PyTorch to 1e-4 at the traced size and at other (odd, non-square) sizes.
* The TorchScript exporter (``dynamo=False``) records sizes and RelPos indices as constants: it raises.
* A static export folds the constant RelPos table resize: it must fold to the right numbers.
* ``tools/deployment/pytorch2onnx.py`` on a classifier, a segmentor and a detector (backbone + neck), and its
  refusal of a wrong file.

Export takes minutes of CPU on a 2-core machine: those tests are marked slow.
"""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dgmn_mm  # noqa: F401
from dgmn_mm.models.backbones.dgmn2 import DGMN2, RelPosEmb
from dgmn_mm.ops.geometry import _linear_resize_rows

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, 'tools', 'deployment', 'pytorch2onnx.py')


@pytest.mark.parametrize('impl', ['fast', 'reference'])
def test_torchscript_exporter_is_refused(impl, tmp_path):
    model = DGMN2(arch='tiny', attn_impl=impl).eval()
    with pytest.raises(Exception, match='TorchScript ONNX exporter'):
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64), ), str(tmp_path / 'm.onnx'), dynamo=False)


def test_linear_resize_rows_equals_interpolate():
    """The export form of the RelPos table resize (Gather + lerp) equals the bilinear F.interpolate of the
    official code: to 2e-5 of PyTorch's fp32 result (whose own rounding is up to ~1.3e-5) and to 1e-6 of the
    exact (fp64) one, for every table length 1..40 and target length 1..60 (down- and up-sampling)."""
    torch.manual_seed(0)
    worst_fp32 = worst_exact = 0.
    for L in range(1, 41):
        t = torch.randn(L, 8)
        for n in range(1, 61):
            got = _linear_resize_rows(t, n)
            assert got.shape == (n, 8)
            ref = F.interpolate(t[None, None], size=(n, 8), mode='bilinear', align_corners=False)[0, 0]
            exact = F.interpolate(t.double()[None, None], size=(n, 8), mode='bilinear', align_corners=False)[0, 0]
            worst_fp32 = max(worst_fp32, (got - ref).abs().max().item())
            worst_exact = max(worst_exact, (got.double() - exact).abs().max().item())
    assert worst_fp32 <= 2e-5 and worst_exact <= 1e-6, (worst_fp32, worst_exact)


@pytest.mark.parametrize('hw', [(2, 3), (3, 5)])
def test_static_relpos_onnx_matches_pytorch(hw, tmp_path):
    """RelPos of a stage-4 attention (7 x 7 tables at 224, i.e. 15 rows) exported with a static size.

    The tables are constants, so the exporter folds their resize; folded as an ONNX Resize by
    ``onnx.reference`` it was wrong for 15 -> 11 rows (W = 3; a 2 x 3 map is stage 4 of a 64 x 96 image):
    this test measured 3.1 at 2 x 3 and 3.8 at 3 x 5, the Semantic FPN logits were 0.014 off. The Gather +
    lerp form folds exactly."""
    ort = pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    rel = RelPosEmb((7, 7), 64).eval()
    q = torch.randn(1, 8, *hw, 64)
    path = str(tmp_path / 'relpos.onnx')
    with torch.no_grad():
        torch.onnx.export(rel, (q, ), dynamo=True, opset_version=18).save(path)
        ref = rel(q).numpy()
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    got = sess.run(None, {sess.get_inputs()[0].name: q.numpy()})[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.slow
def test_dgmn2_default_settings_dynamic_onnx_matches_pytorch(tmp_path):
    """DGMN2-Tiny, all default settings (fast attention, official RelPos, strides 4/2/2/2): one export with
    dynamic axes, then onnxruntime at three sizes and batch 2 equals PyTorch to 1e-4."""
    ort = pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    model = DGMN2(arch='tiny').eval()
    Dim = torch.export.Dim
    dyn = ({0: Dim('batch', min=1, max=64), 2: Dim('h', min=16, max=4096), 3: Dim('w', min=16, max=4096)}, )
    with torch.no_grad():
        prog = torch.onnx.export(model, (torch.randn(2, 3, 64, 64), ), dynamo=True, dynamic_shapes=dyn,
                                 opset_version=18)
    path = str(tmp_path / 'dgmn2_tiny.onnx')
    prog.save(path)
    ops = {n.op_type for n in prog.model_proto.graph.node}
    assert 'GridSample' in ops and not any('dgmn' in op.lower() for op in ops)
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    for b, h, w in ((1, 64, 64), (1, 64, 96), (2, 97, 131)):
        x = torch.randn(b, 3, h, w)
        with torch.no_grad():
            ref = model(x)
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        assert len(got) == 4
        for r, o in zip(ref, got):
            assert r.shape == o.shape
            assert np.abs(r.numpy() - o).max() <= 1e-4, (b, h, w)


@pytest.mark.slow
@pytest.mark.parametrize('config,n_out,dynamic', [
    ('configs/mmpretrain/dgmn2/dgmn2-tiny_8xb128_in1k.py', 1, True),
    # the Semantic FPN segmentor, static and dynamic (RelPos table resize folded as Gather + lerp; mmseg's
    # Upsample sizes kept symbolic by the tool)
    ('configs/mmseg/dgmn2/fpn_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py', 1, False),
    ('configs/mmseg/dgmn2/fpn_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py', 1, True),
    ('configs/mmdet/dgmn2/retinanet_dgmn2-tiny_fpn_1x_coco.py', 5, True),
])
def test_pytorch2onnx_cli(config, n_out, dynamic, tmp_path):
    out = tmp_path / 'model.onnx'
    cmd = [sys.executable, TOOL, config, '--shape', '64', '96', '--verify', '--out', str(out)]
    if dynamic:
        cmd += ['--dynamic', '--verify-shapes', '64', '64', '97', '131']
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith('verify ')]
    assert len(lines) == (3 if dynamic else 1) and all('(ok' in ln for ln in lines), proc.stdout
    import onnx
    assert len(onnx.load(str(out)).graph.output) == n_out


def _load_tool():
    spec = importlib.util.spec_from_file_location('dgmn_tool_pytorch2onnx', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# a small DGMN2 classifier (one block per stage, narrow), built by the tool from this config
SMALL_CLASSIFIER_CFG = """
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(type='DGMN2', arch=dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 32, 64),
                                          num_heads=(1, 1, 2, 2), mlp_ratios=(2, 2, 2, 2)), out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=64, loss=dict(type='CrossEntropyLoss')))
"""


def test_pytorch2onnx_dynamic_mmseg_upsample_follows_the_input(tmp_path):
    """mmseg's ``Upsample`` (Semantic FPN scale heads, SETR heads) sizes its output with
    ``int(h * scale_factor)``, which ``torch.export`` records as the traced number: the tool's export keeps it
    symbolic, so a dynamic graph upsamples every size correctly (without that, the graph's first output
    stays 32 x 48 for a 40 x 40 input and verify() raises on the shape)."""
    pytest.importorskip('onnxruntime')
    from mmseg.models.utils import Upsample
    tool = _load_tool()

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, 2, 1)
            self.up = Upsample(scale_factor=2, mode='bilinear', align_corners=True)
            self.down = Upsample(scale_factor=0.5, mode='bilinear', align_corners=False)

        def forward(self, x):
            y = self.up(self.conv(x))
            return y, self.down(y)

    torch.manual_seed(0)
    net = Net().eval()
    path = str(tmp_path / 'up.onnx')
    tool.export(net, (32, 48), path, dynamic=True)
    assert not hasattr(Upsample.forward, '__wrapped__')  # mmseg's own forward again after the export
    for shape, diff in tool.verify(net, path, [(32, 48), (40, 40), (37, 53)], batch_size=2):
        assert diff <= 1e-5, (shape, diff)


@pytest.mark.slow
@pytest.mark.parametrize('with_verify', [False, True])
def test_pytorch2onnx_refuses_a_wrong_export(with_verify, tmp_path, monkeypatch):
    """A file whose numbers are wrong is never accepted: the export is monkeypatched to write a graph with
    one weight shifted by 0.05 (it still runs, at the right shapes). Without --verify the tool checks the
    file at the export size, removes it and raises; with --verify it reports FAILED and returns 1."""
    pytest.importorskip('onnxruntime')
    import onnx
    from onnx import numpy_helper
    tool = _load_tool()
    original_export = tool.export

    def export_wrong(module, shape, out, *args, **kwargs):
        original_export(module, shape, out, *args, **kwargs)
        model = onnx.load(out)
        inits = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
        target = max(inits, key=lambda t: numpy_helper.to_array(t).size)
        target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) + np.float32(0.05), target.name))
        onnx.save(model, out)

    monkeypatch.setattr(tool, 'export', export_wrong)
    cfg = tmp_path / 'small_dgmn2_cls.py'
    cfg.write_text(SMALL_CLASSIFIER_CFG)
    out = tmp_path / 'model.onnx'
    argv = [str(cfg), '--shape', '64', '96', '--out', str(out)]
    if with_verify:
        assert tool.main(argv + ['--verify']) == 1
        return
    with pytest.raises(RuntimeError, match=r'differs from PyTorch by .* at \(1, 3, 64, 96\).*File removed'):
        tool.main(argv)
    assert not out.exists()


def test_pytorch2onnx_rejects_low_opset():
    mod = _load_tool()
    with pytest.raises(ValueError, match='opset must be >= 16'):
        mod.export(torch.nn.Identity(), (8, 8), 'unused.onnx', opset=13)

"""ONNX export of DGMN2 is right at every input size, or refused.

* The dynamo exporter (``torch.onnx.export(..., dynamo=True)``, torch's default) with dynamic batch, height
  and width: onnxruntime equals PyTorch to 1e-4 at the traced size and at other (odd, non-square) sizes.
* The TorchScript exporter (``dynamo=False``) records sizes and RelPos indices as constants: it raises.
* ``tools/deployment/pytorch2onnx.py`` on a classifier, a segmentor and a detector (backbone + neck).

Export takes minutes of CPU on a 2-core machine: those tests are marked slow.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import dgmn_mm  # noqa: F401
from dgmn_mm.models.backbones.dgmn2 import DGMN2

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, 'tools', 'deployment', 'pytorch2onnx.py')


@pytest.mark.parametrize('impl', ['fast', 'reference'])
def test_torchscript_exporter_is_refused(impl, tmp_path):
    model = DGMN2(arch='tiny', attn_impl=impl).eval()
    with pytest.raises(Exception, match='TorchScript ONNX exporter'):
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64), ), str(tmp_path / 'm.onnx'), dynamo=False)


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
    # a known defect: the Semantic FPN segmentor's graph differs from PyTorch by ~0.015 at 64 x 96, also
    # exported with a static shape (the backbone, the classifier and RetinaNet agree to <= 3e-6); the tool
    # refuses that file (test below). strict: this case turns red once the export is right.
    pytest.param('configs/mmseg/dgmn2/fpn_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py', 1, False,
                 marks=pytest.mark.xfail(strict=True, reason='Semantic FPN ONNX graph differs by ~0.015')),
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


@pytest.mark.slow
def test_pytorch2onnx_refuses_a_wrong_export_without_verify(tmp_path):
    """Without --verify the tool still checks the file at the export size and removes it when onnxruntime
    disagrees with PyTorch (the Semantic FPN segmentor above): an error, never a silently wrong file."""
    out = tmp_path / 'model.onnx'
    cmd = [sys.executable, TOOL, 'configs/mmseg/dgmn2/fpn_dgmn2-tiny_4xb2-40k_cityscapes-769x769.py',
           '--shape', '64', '96', '--out', str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=3600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode != 0 and 'File removed' in proc.stderr, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert not out.exists()


def test_pytorch2onnx_rejects_low_opset():
    spec = __import__('importlib.util').util.spec_from_file_location('dgmn_tool_pytorch2onnx', TOOL)
    mod = __import__('importlib.util').util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(ValueError, match='opset must be >= 16'):
        mod.export(torch.nn.Identity(), (8, 8), 'unused.onnx', opset=13)

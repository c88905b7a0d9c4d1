"""dgmn_mm.ops: the sampled-attention operators, their backends and their FLOP handles.

* every backend (PyTorch, C++ when built, Triton in the interpreter) equals the PyTorch formulation, outputs
  and gradients (the hand-written backwards included);
* ``torch.library.opcheck`` (schema, fake kernels, autograd registration, AOT dispatch with dynamic shapes);
* the backend choice: ``DGMN_MM_ATTN_BACKEND`` forces one, a forced backend that cannot run raises, the
  automatic choice falls back with exactly one warning that carries the import error;
* mmengine's FlopAnalyzer counts the fused path like ``tools/analysis_tools/get_flops.py``;
* ``python -m dgmn_mm.env``.
"""
import os
import subprocess
import sys
import warnings

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import dgmn_mm  # noqa: F401
from dgmn_mm.models.backbones.dgmn2 import DGMN2, DGMN2Attention
from dgmn_mm.ops import backend as ob
from dgmn_mm.ops import attention as S

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the cpp cases are always collected; without the kernel they show as SKIPPED with the import error
# (the ``cpp_kernel`` marker, tests/conftest.py)
CPU_BACKENDS = ['torch', pytest.param('cpp', marks=pytest.mark.cpp_kernel)]


def inputs(B, H, W, nh, d, dtype=torch.float32, walk_std=0.8, seed=0):
    g = torch.Generator().manual_seed(seed)
    N, C = H * W, nh * d
    qkv = torch.randn(B, N, 3 * C, generator=g, dtype=dtype)
    walk = torch.randn(B, N, nh, 18, generator=g, dtype=dtype) * walk_std  # some walks leave the map
    pos = torch.randn(B, nh, N, 9, generator=g, dtype=dtype)
    return qkv, walk, pos


def op_grads(qkv, walk, pos, H, W, nh, scale, fn):
    qkv, walk, pos = (t.detach().clone().requires_grad_(True) for t in (qkv, walk, pos))
    out = fn(qkv, walk, pos, (H, W), nh, scale)
    g = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    gq, gw, gp = torch.autograd.grad((out * g).sum(), (qkv, walk, pos))
    return out.detach(), gq, gw, gp


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('B,H,W,nh,d', [(2, 5, 7, 2, 8), (1, 9, 4, 1, 64), (3, 3, 11, 5, 4), (2, 6, 6, 8, 32)])
def test_operator_equals_pytorch_formulation(backend, B, H, W, nh, d, monkeypatch):
    """Outputs and all three input gradients of the operator (hand-written backward) vs autograd through
    the PyTorch formulation, fp32 <= 1e-5 (odd, non-square sizes, batch > 1, several head counts)."""
    monkeypatch.setenv(ob.ENV_VAR, backend)
    qkv, walk, pos = inputs(B, H, W, nh, d)
    scale = d ** -0.5
    ref = op_grads(qkv, walk, pos, H, W, nh, scale, S.sampled_attention_torch)
    got = op_grads(qkv, walk, pos, H, W, nh, scale, S.sampled_attention)
    for name, a, b in zip(('out', 'qkv', 'walk', 'pos'), ref, got):
        assert a.abs().max() > 0, name
        err = (a - b).abs().max().item()
        assert err <= 1e-5 * max(1., a.abs().max().item()), (name, err)


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_operator_gradcheck_fp64(backend, monkeypatch):
    monkeypatch.setenv(ob.ENV_VAR, backend)
    H, W, nh = 3, 4, 2
    qkv, walk, pos = (t.requires_grad_(True) for t in inputs(1, H, W, nh, 3, torch.float64, 0.6))
    assert torch.autograd.gradcheck(lambda a, b, c: S.sampled_attention(a, b, c, (H, W), nh, 0.4),
                                    (qkv, walk, pos), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('by_column', [True, False])
def test_relpos_rows_operator(backend, by_column, monkeypatch):
    monkeypatch.setenv(ob.ENV_VAR, backend)
    B, H, W, nh, d = 2, 5, 3, 2, 4
    qkv = torch.randn(B, H * W, 3 * nh * d, dtype=torch.float64, requires_grad=True)
    rows = torch.randn(W if by_column else H, 9, d, dtype=torch.float64, requires_grad=True)
    out = torch.ops.dgmn_mm.relpos_rows(qkv, rows, H, W, nh, by_column)
    q = qkv[..., :nh * d].reshape(B, H, W, nh, d)
    for b, y, x, j, t in ((0, 0, 0, 0, 0), (1, 4, 2, 1, 8), (1, 2, 1, 0, 4)):
        expected = q[b, y, x, j] @ rows[x if by_column else y, t]
        assert torch.allclose(out[b, j, y * W + x, t], expected)
    assert torch.autograd.gradcheck(lambda a, r: torch.ops.dgmn_mm.relpos_rows(a, r, H, W, nh, by_column),
                                    (qkv, rows))


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_opcheck(backend, monkeypatch):
    """Schema, fake kernels, autograd registration and AOT dispatch (dynamic shapes) of the three ops."""
    monkeypatch.setenv(ob.ENV_VAR, backend)
    H, W, nh = 3, 5, 2
    qkv, walk, pos = (t.requires_grad_(True) for t in inputs(2, H, W, nh, 4))
    torch.library.opcheck(torch.ops.dgmn_mm.sampled_attention.default, (qkv, walk, pos, H, W, nh, 0.5))
    rows = torch.randn(W, 9, 4, requires_grad=True)
    torch.library.opcheck(torch.ops.dgmn_mm.relpos_rows.default, (qkv, rows, H, W, nh, True))
    out, attn = torch.ops.dgmn_mm.sampled_attention(qkv, walk, pos, H, W, nh, 0.5)
    args = (torch.randn_like(out), qkv.detach(), walk.detach(), pos.detach(), attn.detach(), H, W, nh, 0.5)
    for need in ((True, True), (False, True), (True, False)):
        torch.library.opcheck(torch.ops.dgmn_mm.sampled_attention_backward.default, args + need)


def test_fake_kernels_give_the_shapes():
    with FakeTensorMode():
        qkv, walk, pos = torch.empty(3, 35, 96), torch.empty(3, 35, 4, 18), torch.empty(3, 4, 35, 9)
        out, attn = torch.ops.dgmn_mm.sampled_attention(qkv, walk, pos, 5, 7, 4, 0.3)
        assert out.shape == (3, 35, 32) and attn.shape == (3, 4, 35, 9)
        g = torch.ops.dgmn_mm.sampled_attention_backward(out, qkv, walk, pos, attn, 5, 7, 4, 0.3, True, False)
        assert [t.shape for t in g] == [qkv.shape, walk.shape, (0, )]
        r = torch.ops.dgmn_mm.relpos_rows(qkv, torch.empty(7, 9, 8), 5, 7, 4, True)
        assert r.shape == (3, 4, 35, 9)


def test_bad_arguments_raise():
    qkv, walk, pos = inputs(1, 3, 4, 2, 4)
    with pytest.raises(ValueError, match='H \\* W'):
        S.sampled_attention(qkv, walk, pos, (4, 4), 2, 0.5)
    with pytest.raises(ValueError, match='walk must be'):
        S.sampled_attention(qkv, walk[..., :16], pos, (3, 4), 2, 0.5)
    with pytest.raises(TypeError, match='dtype'):
        S.sampled_attention(qkv, walk.double(), pos, (3, 4), 2, 0.5)


# ------------------------------------------------------------------------------------------------------
# backend choice
# ------------------------------------------------------------------------------------------------------
def test_env_var_rejects_unknown_backend(fresh_backends):
    fresh_backends.setenv(ob.ENV_VAR, 'cuda_magic')
    with pytest.raises(ValueError, match="DGMN_MM_ATTN_BACKEND must be one of"):
        ob.resolve('cpu')


def test_forced_cpp_on_cuda_tensors_is_an_error(fresh_backends):
    fresh_backends.setenv(ob.ENV_VAR, 'cpp')
    with pytest.raises(ob.BackendUnavailableError, match='CPU tensors only'):
        ob.resolve('cuda')


def test_missing_kernel_forced_is_an_error_automatic_warns_once(fresh_backends):
    """Hide the compiled module (a real ImportError): forcing 'cpp' raises, the automatic choice runs the
    PyTorch backend with exactly one warning that names the import error and how to build."""
    for name in ('dgmn_mm.ops._sampled_attention_cpp', 'dgmn_mm.ops._sampled_attention_cpp_avx2',
                 'dgmn_mm.ops._sampled_attention_cpp_avx512'):
        fresh_backends.setitem(sys.modules, name, None)
    qkv, walk, pos = inputs(1, 4, 5, 2, 4)
    fresh_backends.setenv(ob.ENV_VAR, 'cpp')
    with pytest.raises(ob.BackendUnavailableError, match='_sampled_attention_cpp'):
        S.sampled_attention(qkv, walk, pos, (4, 5), 2, 0.5)
    fresh_backends.delenv(ob.ENV_VAR)
    ob._reset_for_tests()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter('always')
        out1 = S.sampled_attention(qkv, walk, pos, (4, 5), 2, 0.5)
        out2 = S.sampled_attention(qkv, walk, pos, (4, 5), 2, 0.5)
        assert ob.resolve('cpu') == 'torch'
    msgs = [str(w.message) for w in rec if 'dgmn_mm sampled attention' in str(w.message)]
    assert len(msgs) == 1, msgs
    assert 'ModuleNotFoundError' in msgs[0] and '_sampled_attention_cpp' in msgs[0] and 'pip install' in msgs[0]
    ref = S.sampled_attention_torch(qkv, walk, pos, (4, 5), 2, 0.5)
    assert torch.equal(out1, out2) and (out1 - ref).abs().max() <= 1e-6


def test_missing_triton_forced_is_an_error(fresh_backends):
    fresh_backends.setitem(sys.modules, 'dgmn_mm.ops.triton', None)
    fresh_backends.setenv(ob.ENV_VAR, 'triton')
    with pytest.raises(ob.BackendUnavailableError, match='dgmn_mm.ops.triton does not import'):
        ob.resolve('cuda')
    fresh_backends.delenv(ob.ENV_VAR)
    with pytest.warns(RuntimeWarning, match="'triton' backend for cuda tensors is not available"):
        assert ob.resolve('cuda') == 'torch'


@pytest.mark.cpp_kernel
def test_automatic_cpu_backend_is_cpp_when_built(fresh_backends):
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert ob.resolve('cpu') == 'cpp'
    fresh_backends.setenv(ob.ENV_VAR, 'torch')
    assert ob.resolve('cpu') == 'torch'


TRITON_SCRIPT = r'''
import torch, dgmn_mm
from dgmn_mm.ops import attention as S, backend as ob
assert ob.resolve('cpu') == 'triton'
g = torch.Generator().manual_seed(0)
B, H, W, nh, d = 2, 5, 6, 2, 8
N, C = H * W, nh * d
ts = [torch.randn(B, N, 3 * C, generator=g), torch.randn(B, N, nh, 18, generator=g) * 0.8,
      torch.randn(B, nh, N, 9, generator=g)]
res = []
for fn in (S.sampled_attention_torch, S.sampled_attention):
    a, b, c = (t.clone().requires_grad_(True) for t in ts)
    out = fn(a, b, c, (H, W), nh, 0.35)
    grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), (a, b, c))
    res.append([out] + list(grads))
print(max(float((x - y).abs().max() / max(1., float(x.abs().max()))) for x, y in zip(*res)))
'''


@pytest.mark.slow  # a fresh process running the Triton interpreter
def test_triton_backend_in_the_interpreter():
    """DGMN_MM_ATTN_BACKEND=triton on CPU runs the Triton kernels under TRITON_INTERPRET=1 (own process:
    the interpreter must be chosen before the kernels are imported)."""
    pytest.importorskip('triton')
    env = dict(os.environ, DGMN_MM_ATTN_BACKEND='triton', OMP_NUM_THREADS='1')
    env.pop('TRITON_INTERPRET', None)
    proc = subprocess.run([sys.executable, '-c', TRITON_SCRIPT], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode and 'dgmn_mm.ops.triton does not import' in proc.stderr:
        pytest.skip('dgmn_mm.ops.triton is not importable here')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) <= 1e-5


# ------------------------------------------------------------------------------------------------------
# the backbone on the operators, both stride modes
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('strides', [(4, 2, 2, 2), (4, 2, 1, 1)])
def test_backbone_fast_equals_reference(backend, strides, monkeypatch):
    monkeypatch.setenv(ob.ENV_VAR, backend)
    arch = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(2, 2, 2, 2))
    torch.manual_seed(0)
    ref = DGMN2(arch=arch, strides=strides, attn_impl='reference').train()
    fast = DGMN2(arch=arch, strides=strides).train()
    fast.load_state_dict(ref.state_dict())
    img = torch.randn(2, 3, 45, 61)
    res = []
    for model in (ref, fast):
        feats = model(img)
        sum((f * f).mean() for f in feats).backward()
        res.append((feats, {n: p.grad for n, p in model.named_parameters()}))
    for a, b in zip(res[0][0], res[1][0]):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-5
    for k, g in res[0][1].items():
        assert (g - res[1][1][k]).abs().max() <= 1e-4 * max(1., g.abs().max().item()), k


# ------------------------------------------------------------------------------------------------------
# FLOPs and environment report
# ------------------------------------------------------------------------------------------------------
def test_mmengine_flop_analyzer_counts_the_operators():
    """mmengine's analyzer (as upstream get_flops tools use it) on the fused path = the project count."""
    from mmengine.analysis import FlopAnalyzer, get_model_complexity_info
    m = DGMN2(arch='tiny', strides=(4, 2, 2, 2)).eval()
    x = torch.randn(1, 3, 64, 96)
    fa = FlopAnalyzer(m, (x, ))
    fa.unsupported_ops_warnings(False)
    total = fa.total()
    assert not any(k.startswith('dgmn_mm::') or 'PythonOp' in k for k in fa.unsupported_ops())
    ops = fa.by_operator()
    assert ops['sampled_attention'] > 0 and ops['relpos_rows'] > 0
    # the project's counter (dgmn_mm.analysis, as tools/analysis_tools/get_flops.py: reference path with MAC
    # einsum handles)
    from dgmn_mm.analysis import count_flops
    assert total == count_flops(m, x)['impl']
    assert all(mod.attn_impl == 'fast' for mod in m.modules() if isinstance(mod, DGMN2Attention))
    # sampling + messages: 10 K C MACs per token, RelPos: 2 K C per token (stage maps 16x24 ... 2x3)
    tokens = [(16 * 24, 64), (8 * 12, 128), (4 * 6, 320), (2 * 3, 512)]
    assert ops['sampled_attention'] == sum(2 * n * 9 * c * 10 for n, c in tokens)
    assert ops['relpos_rows'] == sum(2 * n * 9 * c * 2 for n, c in tokens)
    info = get_model_complexity_info(m, inputs=(x, ), show_table=False, show_arch=False)
    assert info['flops'] == total


def test_env_report_in_process(capsys, monkeypatch):
    """The report of ``python -m dgmn_mm.env`` (its ``main``), in this process."""
    from dgmn_mm import env
    monkeypatch.setenv(ob.ENV_VAR, 'torch')
    assert env.main() == 0
    out = capsys.readouterr().out
    for name in env.PACKAGES:
        assert any(line.split()[0] == name for line in out.splitlines()), name
    assert 'attention backend (cpu)      torch' in out
    assert 'attention backend (cuda)     torch' in out


@pytest.mark.slow  # the same report from ``python -m dgmn_mm.env`` in a fresh process
def test_env_report():
    proc = subprocess.run([sys.executable, '-m', 'dgmn_mm.env'], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, DGMN_MM_ATTN_BACKEND='torch'))
    assert proc.returncode == 0, proc.stderr
    for name in ('torch', 'mmcv', 'mmengine', 'mmdet', 'mmseg', 'mmpretrain', 'triton', 'onnx', 'onnxruntime'):
        assert any(line.split()[0] == name for line in proc.stdout.splitlines()), name
    assert 'attention backend (cpu)      torch' in proc.stdout
    assert 'attention backend (cuda)     torch' in proc.stdout

"""Triton kernels of the DGMN2 sampled attention (``dgmn_mm.ops.triton``), run on CPU tensors under Triton's
interpreter, against the C++ kernel (when built) and the pure-PyTorch path (autograd through
``grid_sample``).

The kernels wrap themselves as interpreted functions for CPU tensors, whatever ``TRITON_INTERPRET`` was when
triton was imported; one case also runs in a fresh interpreter with ``TRITON_INTERPRET=1`` set before the
import (triton then builds its own library functions for the interpreter too). The interpreter is slow
(~0.1 s per program): the sizes here are small odd maps.
"""
import importlib
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip('triton')

from dgmn_mm.models.layers.sampled_attention import sampled_attention_torch  # noqa: E402
from dgmn_mm.ops.triton import sampled_attention as tsa  # noqa: E402
from dgmn_mm.ops.triton import sampled_attention_bwd, sampled_attention_fwd  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cpp():
    try:
        return importlib.import_module('dgmn_mm.ops._sampled_attention_cpp')
    except ImportError:
        return None


def _inputs(B, H, W, nh, d, walk_std=2.5, dtype=torch.float32, seed=0):
    """qkv, walk, pos, grad_out. Walks of std 2.5 px send many taps outside the map (zero padding)."""
    g = torch.Generator().manual_seed(seed)
    N, C = H * W, nh * d
    qkv = torch.randn(B, N, 3 * C, generator=g).to(dtype)
    walk = torch.randn(B, N, nh, 18, generator=g) * walk_std
    pos = torch.randn(B, nh, N, 9, generator=g)
    grad_out = torch.randn(B, N, C, generator=g)
    return qkv, walk, pos, grad_out


def _torch_reference(qkv, walk, pos, grad_out, H, W, nh, scale):
    """out and the gradients of qkv, walk and pos from the PyTorch path (fp32, autograd)."""
    q = qkv.float().clone().requires_grad_()
    w = walk.float().clone().requires_grad_()
    p = pos.float().clone().requires_grad_()
    out = sampled_attention_torch(q, w, p, (H, W), nh, scale)
    out.backward(grad_out.float())
    return out.detach(), q.grad, w.grad, p.grad


def _max_err(a, b):
    return (a.float() - b.float()).abs().max().item()


@pytest.mark.parametrize('B, H, W, nh, d', [(1, 5, 7, 2, 8), (3, 6, 9, 5, 12)])
def test_fp32_matches_torch_and_cpp(B, H, W, nh, d):
    qkv, walk, pos, gout = _inputs(B, H, W, nh, d)
    scale = d ** -0.5
    # taps far outside the map, and half a pixel off it (one corner inside)
    walk[:, :, :, 1] = -W + 0.25
    walk[:, 0, :, 2:4] = torch.tensor([0.5, W + 0.5])
    out, attn = sampled_attention_fwd(qkv, walk, pos, H, W, nh, scale)
    assert out.shape == (B, H * W, nh * d) and out.dtype == torch.float32
    assert attn.shape == (B, nh, H * W, 9) and attn.dtype == torch.float32
    torch.testing.assert_close(attn.sum(-1), torch.ones(B, nh, H * W))
    gqkv, gwalk, gpos = sampled_attention_bwd(gout, qkv, walk, attn, H, W, nh, scale, True, True)
    assert gqkv.shape == qkv.shape and gwalk.shape == walk.shape and gpos.shape == pos.shape

    ref_out, ref_gqkv, ref_gwalk, ref_gpos = _torch_reference(qkv, walk, pos, gout, H, W, nh, scale)
    assert _max_err(out, ref_out) <= 1e-4
    assert _max_err(gqkv, ref_gqkv) <= 1e-4
    assert _max_err(gwalk, ref_gwalk) <= 1e-4
    assert _max_err(gpos, ref_gpos) <= 1e-4
    # the walks do matter, and zero padding is exercised: gradients exist for k and v rows and the walks
    assert ref_gwalk.abs().max() > 1e-2 and gqkv[..., nh * d:].abs().max() > 1e-2

    ext = _cpp()
    if ext is not None:
        c_out, c_attn = ext.forward(qkv, walk, pos, H, W, nh, scale)
        c_gqkv, c_gwalk, c_gpos = ext.backward(gout, qkv, walk, c_attn, H, W, nh, scale, -1, True, True)
        assert _max_err(out, c_out) <= 1e-5 and _max_err(attn, c_attn) <= 1e-5
        assert _max_err(gqkv, c_gqkv) <= 1e-4
        assert _max_err(gwalk, c_gwalk) <= 1e-4
        assert _max_err(gpos, c_gpos) <= 1e-5


@pytest.mark.cpp_kernel  # skipped with the import error when the kernel is not built
def test_integer_walks_match_cpp_exactly():
    """Zero and integer walks put the samples exactly on pixels, where the walk gradient is one-sided: the
    kernel must floor the very same positions as the C++ kernel (same float steps, IEEE division)."""
    B, H, W, nh, d = 1, 6, 9, 1, 16
    qkv, walk, pos, gout = _inputs(B, H, W, nh, d, seed=1)
    walk = torch.round(walk)
    walk[:, ::3] = 0.
    ext = _cpp()
    out, attn = sampled_attention_fwd(qkv, walk, pos, H, W, nh, 0.25)
    gqkv, gwalk, gpos = sampled_attention_bwd(gout, qkv, walk, attn, H, W, nh, 0.25)
    c_out, c_attn = ext.forward(qkv, walk, pos, H, W, nh, 0.25)
    c_gqkv, c_gwalk, c_gpos = ext.backward(gout, qkv, walk, c_attn, H, W, nh, 0.25, -1, True, True)
    assert _max_err(out, c_out) <= 1e-5
    assert _max_err(gqkv, c_gqkv) <= 1e-4
    assert _max_err(gwalk, c_gwalk) <= 1e-4  # a floor flipped by one ulp would change it by O(1)
    assert _max_err(gpos, c_gpos) <= 1e-5


def test_small_blocks_and_gradient_flags(monkeypatch):
    """Several query blocks per (batch, head) with a ragged last block (the GPU block sizes), programs
    scattering into the same key/value rows, and the optional gradients."""
    B, H, W, nh, d = 1, 5, 7, 1, 16  # N = 35 = 8 + 8 + 8 + 8 + 3
    qkv, walk, pos, gout = _inputs(B, H, W, nh, d, walk_std=1.5, seed=2)
    scale = d ** -0.5
    ref_out, ref_gqkv, ref_gwalk, ref_gpos = _torch_reference(qkv, walk, pos, gout, H, W, nh, scale)
    full = tsa._launch_config
    calls = []

    def small(N, d, interpret, backward):
        calls.append(backward)
        return (8,) + tuple(full(N, d, interpret, backward)[1:])

    monkeypatch.setattr(tsa, '_launch_config', small)
    out, attn = sampled_attention_fwd(qkv, walk, pos, H, W, nh, scale)
    gqkv, gwalk, gpos = sampled_attention_bwd(gout, qkv, walk, attn, H, W, nh, scale, True, True)
    assert calls == [False, True]
    assert _max_err(out, ref_out) <= 1e-4
    assert _max_err(gqkv, ref_gqkv) <= 1e-4
    assert _max_err(gwalk, ref_gwalk) <= 1e-4
    assert _max_err(gpos, ref_gpos) <= 1e-4
    # without the walk and pos gradients: None, and the same qkv gradient
    gqkv2, gwalk2, gpos2 = sampled_attention_bwd(gout, qkv, walk, attn, H, W, nh, scale, False, False)
    assert gwalk2 is None and gpos2 is None
    assert _max_err(gqkv2, gqkv) <= 1e-6


@pytest.mark.parametrize('dtype, tol', [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
def test_half_precision_qkv(dtype, tol):
    """fp16 / bf16 qkv, fp32 accumulation: compared with the fp32 computation on the same (rounded) inputs."""
    B, H, W, nh, d = 1, 5, 7, 2, 8
    qkv, walk, pos, gout = _inputs(B, H, W, nh, d, dtype=dtype, seed=3)
    scale = d ** -0.5
    out, attn = sampled_attention_fwd(qkv, walk, pos, H, W, nh, scale)
    assert out.dtype == dtype and attn.dtype == torch.float32
    gqkv, gwalk, gpos = sampled_attention_bwd(gout.to(dtype), qkv, walk, attn, H, W, nh, scale)
    assert gqkv.dtype == dtype and gwalk.dtype == torch.float32 and gpos.dtype == torch.float32
    ref_out, ref_gqkv, ref_gwalk, ref_gpos = _torch_reference(qkv, walk, pos, gout.to(dtype), H, W, nh, scale)

    def rel(a, b):
        return _max_err(a, b) / b.abs().max().item()

    assert rel(out, ref_out) <= tol
    assert rel(gqkv, ref_gqkv) <= tol
    # attn and the walk / pos gradients are fp32 outputs of fp32 arithmetic on the rounded qkv
    assert rel(gwalk, ref_gwalk) <= 1e-4 and rel(gpos, ref_gpos) <= 1e-4


def test_bad_inputs():
    qkv, walk, pos, gout = _inputs(1, 3, 4, 2, 4)
    with pytest.raises(ValueError, match='H \\* W'):
        sampled_attention_fwd(qkv, walk, pos, 4, 4, 2, 1.)
    with pytest.raises(ValueError, match='H must be a positive int'):
        sampled_attention_fwd(qkv, walk, pos, -3, -4, 2, 1.)
    with pytest.raises(ValueError, match='num_heads'):
        sampled_attention_fwd(qkv, walk, pos, 3, 4, 5, 1.)
    with pytest.raises(ValueError, match='walk must be'):
        sampled_attention_fwd(qkv, walk[..., :9], pos, 3, 4, 2, 1.)
    with pytest.raises(ValueError, match='pos must be'):
        sampled_attention_fwd(qkv, walk, pos[:, :1], 3, 4, 2, 1.)
    with pytest.raises(TypeError, match='float64'):
        sampled_attention_fwd(qkv.double(), walk, pos, 3, 4, 2, 1.)
    with pytest.raises(ValueError, match='grad_out'):
        sampled_attention_bwd(gout[..., :3], qkv, walk, torch.zeros(1, 2, 12, 9), 3, 4, 2, 1.)
    # empty batch: no launch, empty outputs
    out, attn = sampled_attention_fwd(qkv[:0], walk[:0], pos[:0], 3, 4, 2, 1.)
    assert out.shape == (0, 12, 8) and attn.shape == (0, 2, 12, 9)


_SUBPROCESS = r'''
import importlib.util, os, sys, torch
assert os.environ['TRITON_INTERPRET'] == '1'
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
assert isinstance(tl.standard._sum_combine, InterpretedFunction)  # triton itself built for the interpreter
# the kernels module alone (it imports torch and triton only), without the dgmn_mm package
spec = importlib.util.spec_from_file_location('tsa', sys.argv[1])
tsa = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tsa)
qkv, walk, pos, gout, H, W, nh, scale = torch.load(sys.argv[2])
out, attn = tsa.sampled_attention_fwd(qkv, walk, pos, H, W, nh, scale)
torch.save((out,) + tuple(tsa.sampled_attention_bwd(gout, qkv, walk, attn, H, W, nh, scale)), sys.argv[3])
'''


@pytest.mark.slow  # a fresh process with TRITON_INTERPRET=1
def test_under_triton_interpret_env(tmp_path):
    B, H, W, nh, d = 1, 4, 5, 2, 4
    qkv, walk, pos, gout = _inputs(B, H, W, nh, d, walk_std=2., seed=4)
    torch.save((qkv, walk, pos, gout, H, W, nh, 0.5), tmp_path / 'in.pt')
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1')
    res = subprocess.run([sys.executable, '-c', _SUBPROCESS, tsa.__file__, str(tmp_path / 'in.pt'),
                          str(tmp_path / 'out.pt')], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    out, gqkv, gwalk, gpos = torch.load(tmp_path / 'out.pt')
    for got, want in zip((out, gqkv, gwalk, gpos), _torch_reference(qkv, walk, pos, gout, H, W, nh, 0.5)):
        assert _max_err(got, want) <= 1e-4


def test_dgmn2_backbone_with_triton_backend(monkeypatch):
    """A small DGMN2 (odd stage maps, heads 1/2/5/2), forward and backward through the sampled-attention
    operator with ``DGMN_MM_ATTN_BACKEND=triton`` on CPU, against ``attn_impl='reference'``."""
    ob = pytest.importorskip('dgmn_mm.ops.backend')
    from dgmn_mm.models.backbones.dgmn2 import DGMN2
    import dgmn_mm.ops.triton as triton_pkg
    monkeypatch.setenv(ob.ENV_VAR, 'triton')
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    assert ob.resolve('cpu') == 'triton'
    calls = {'fwd': 0, 'bwd': 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(triton_pkg, 'sampled_attention_fwd', counted('fwd', triton_pkg.sampled_attention_fwd))
    monkeypatch.setattr(triton_pkg, 'sampled_attention_bwd', counted('bwd', triton_pkg.sampled_attention_bwd))
    arch = dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 40, 16), num_heads=(1, 2, 5, 2), mlp_ratios=(2, 2, 2, 2))
    torch.manual_seed(0)
    ref = DGMN2(arch=arch, attn_impl='reference').train()
    fast = DGMN2(arch=arch, attn_impl='fast').train()
    fast.load_state_dict(ref.state_dict())
    with torch.no_grad():  # walks of a few pixels (the init's are tiny), so sampling really moves
        for m in (ref, fast):
            for name, p in m.named_parameters():
                if name.endswith('attn.walk.weight'):
                    p.normal_(0, 0.3, generator=torch.Generator().manual_seed(len(name)))
    img = torch.randn(2, 3, 29, 45)
    res = []
    for model in (ref, fast):
        feats = model(img)
        sum((f * f).mean() for f in feats).backward()
        res.append((feats, {n: p.grad for n, p in model.named_parameters()}))
    assert calls['fwd'] == 4 and calls['bwd'] == 4  # one attention layer per stage
    for a, b in zip(res[0][0], res[1][0]):
        assert a.shape == b.shape and (a - b).abs().max() <= 1e-4
    for k, g in res[0][1].items():
        assert (g - res[1][1][k]).abs().max() <= 1e-4 * max(1., g.abs().max().item()), k
    walk_grads = [g for k, g in res[1][1].items() if k.endswith('attn.walk.weight')]
    assert len(walk_grads) == 4 and all(g.abs().max() > 0 for g in walk_grads)


def _cuda_signature(fn, dtype):
    names = list(__import__('inspect').signature(fn).parameters)
    sig = {}
    for n in names:
        if n.upper() == n and n not in ('N', 'H', 'W', 'C', 'NH', 'D'):
            sig[n] = 'constexpr'
        elif n.endswith('_ptr'):
            sig[n] = '*' + (dtype if n in ('qkv_ptr', 'out_ptr', 'gout_ptr') else 'fp32')
        elif n in ('Hf', 'Wf', 'scale'):
            sig[n] = 'fp32'
        else:
            sig[n] = 'i32'
    # what the launcher specialises for d = 64 and 16-byte aligned tensors
    div16 = [n for n in names if n.endswith('_ptr')] + ['C', 'D']
    return sig, {(names.index(n), ): [['tt.divisibility', 16]] for n in div16}


@pytest.mark.parametrize('dtype', ['fp32', pytest.param('bf16', marks=pytest.mark.slow)])
def test_kernels_compile_for_cuda(dtype, tmp_path, monkeypatch):
    """No GPU here: compile both kernels offline for an sm_80 target with the launch configuration used on
    CUDA (d = 64), fp32 and bf16 qkv. Checks that they lower for a real GPU (the interpreter accepts more),
    that the positions use IEEE division and no FMA contraction, and that ptxas spills nothing."""
    import re
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction
    bin_dir = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin')
    if not os.path.exists(os.path.join(bin_dir, 'ptxas')):
        pytest.skip("triton's bundled ptxas is missing")
    monkeypatch.setenv('TRITON_CACHE_DIR', str(tmp_path))
    for name, backward in (('fwd', False), ('bwd', True)):
        fn = tsa._KERNEL_SOURCES[name]
        block_n, block_d, num_warps = tsa._launch_config(56 * 56, 64, False, backward)
        sig, attrs = _cuda_signature(fn, dtype)
        constexprs = dict(BLOCK_N=block_n, BLOCK_D=block_d)
        if backward:
            constexprs.update(NEED_WALK=True, NEED_POS=True)
        kernel = triton.compile(ASTSource(JITFunction(fn), sig, constexprs, attrs), target=GPUTarget('cuda', 80, 32),
                                options=dict(num_warps=num_warps, enable_fp_fusion=False))
        ptx = kernel.asm['ptx']
        assert 'div.rn.f32' in ptx and 'fma.' not in ptx
        if backward:
            assert 'atom.global.gpu.relaxed.add.f32' in ptx
        cubin = tmp_path / f'{name}_{dtype}.cubin'
        cubin.write_bytes(kernel.asm['cubin'])
        usage = subprocess.run([os.path.join(bin_dir, 'cuobjdump'), '--dump-resource-usage', str(cubin)],
                               capture_output=True, text=True).stdout
        stack = re.search(r'STACK:(\d+)', usage)
        assert stack is not None and int(stack.group(1)) == 0, (name, dtype, usage)

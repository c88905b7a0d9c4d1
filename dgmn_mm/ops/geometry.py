"""Leaf maths shared by the DGMN2 backbone and the sampled-attention operators (no model imports).

* Node-sampling geometry (Eqs. 5 and 8 of "Dynamic Graph Message Passing Networks for Visual
  Recognition", TPAMI 2022): the uniform 3 x 3 neighbourhood plus the predicted walks, normalised to
  ``grid_sample`` coordinates (``align_corners=False``, zeros outside = the DCNv1 ``deformable_im2col``
  rule of the official code).
* Relative-position rows (Fig. 4b): the official table resize and the closed form of its "rel_to_abs"
  indexing, written with shape arithmetic only, so that exported graphs stay valid at every input size.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

NUM_SAMPLES = 9  # K, the number of sampled nodes per query (a 3 x 3 walk neighbourhood)


def _tracing_shapes() -> bool:
    """True while dynamo / torch.export / the ONNX exporter trace: take the branch-free forms, which are
    valid for every (symbolic) size instead of specialising on the traced one."""
    return torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def uniform_grid(height: int, width: int, kernel_size: int = 3, dilation: int = 1,
                 device=None, dtype=None) -> Tensor:
    """Pixel coordinates of the uniformly sampled nodes (the "US" of Fig. 2), without walks.

    Returns:
        Tensor: (H, W, K, 2) with ``[..., 0] = y`` and ``[..., 1] = x``, K = kernel_size ** 2 in row-major
        tap order (k = a * kernel_size + b).
    """
    c = (kernel_size - 1) / 2
    taps = (torch.arange(kernel_size, device=device, dtype=dtype) - c) * dilation
    ty, tx = torch.meshgrid(taps, taps, indexing='ij')  # (ks, ks)
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    py = ys[:, None, None] + ty.reshape(1, 1, -1)  # (H, 1, K)
    px = xs[None, :, None] + tx.reshape(1, 1, -1)  # (1, W, K)
    return torch.stack(torch.broadcast_tensors(py, px), dim=-1)


def walk_to_grid(walk: Tensor, kernel_size: int = 3, dilation: int = 1) -> Tensor:
    """Turn predicted walks into a normalised ``grid_sample`` grid.

    Args:
        walk (Tensor): (B, H, W, K, 2) walks (dy, dx) in pixels, per tap.

    Returns:
        Tensor: (B, H, W * K, 2) grid of (x, y) in [-1, 1] coordinates (align_corners=False convention).
    """
    B, H, W, K, _ = walk.shape
    base = uniform_grid(H, W, kernel_size, dilation, device=walk.device, dtype=walk.dtype)
    p = base + walk  # (B, H, W, K, 2) absolute (y, x)
    gy = (2 * p[..., 0] + 1) / H - 1
    gx = (2 * p[..., 1] + 1) / W - 1
    return torch.stack((gx, gy), dim=-1).reshape(B, H, W * K, 2)


def resize_rel_table(table: Tensor, length: int) -> Tensor:
    """Resize a (L, d) relative-position table to (length, d), as the official detection/segmentation code:
    ``F.interpolate(t[None, None], size=(length, d), mode='bilinear')`` (linear along L, identity along d).

    While tracing for compile/export the resize is always emitted (a same-size bilinear resize returns its
    input exactly), so the graph does not specialise on ``length``. For ONNX export it is written as
    :func:`_linear_resize_rows` (Gather + lerp) instead of an ONNX Resize: the table is a constant, and
    with a static input size the exporter's constant folding (onnxscript evaluates a foldable node with the
    ``onnx.reference`` operators) folds the Resize with ``onnx.reference``'s Resize, which is wrong when a
    source coordinate falls on a row (onnx 1.23: 15 -> 11 rows, output row 5 = source row 7, off by up to
    3.1 for a unit-normal table)."""
    if not _tracing_shapes() and table.shape[0] == length:
        return table
    if torch.onnx.is_in_onnx_export():
        return _linear_resize_rows(table, length)
    return F.interpolate(table[None, None], size=(length, table.shape[1]), mode='bilinear',
                         align_corners=False)[0, 0]


def _linear_resize_rows(table: Tensor, length: int) -> Tensor:
    """``F.interpolate(table[None, None], size=(length, d), mode='bilinear', align_corners=False)[0, 0]``
    written as integer index arithmetic, a Gather of two rows and a lerp. The half-pixel source row
    ``(a + 0.5) L / length - 0.5`` is kept as the exact fraction ``(L (2a + 1) - length) / (2 length)``, so
    the weights are exact to one fp32 rounding (measured for unit-normal tables, L <= 40, length <= 60:
    3e-7 from the exact result, PyTorch's fp32 F.interpolate 1.3e-5); the lerp is continuous in the source
    row, so no rounding can pick other rows."""
    L = table.shape[0]
    a = torch.arange(length, device=table.device)
    den = 2 * length
    num = (L * (2 * a + 1) - length).clamp(min=0)  # source row * den, clamped at row 0 as PyTorch does
    i0 = torch.div(num, den, rounding_mode='floor')
    frac = ((num - i0 * den).to(table.dtype) / den)[:, None]
    i1 = (i0 + 1).clamp(max=L - 1)
    return table[i0] * (1 - frac) + table[i1] * frac


def slot_rows(table: Tensor, size: int, num_slots: int = NUM_SAMPLES) -> Tensor:
    """Rows of a relative table used at each absolute coordinate: ``out[a, j] = table[size - 1 - a + j]``.

    This is the closed form of the official "rel_to_abs" trick (pad, flatten, reshape, slice) for node slot
    j = 0..K-1; only these K rows per coordinate are ever used, so the other L - K products are skipped.

    Returns:
        Tensor: (size, num_slots, d).
    """
    a = torch.arange(size, device=table.device)
    j = torch.arange(num_slots, device=table.device)
    return table[(size - 1 - a)[:, None] + j[None, :]]


def relpos_rows_pair(rel_width: Tensor, rel_height: Tensor, height: int, width: int,
                     num_slots: int = NUM_SAMPLES):
    """The (W, K, d) width rows and (H, K, d) height rows of a RelPos term at an H x W map."""
    rows_w = slot_rows(resize_rel_table(rel_width, width + num_slots - 1), width, num_slots)
    rows_h = slot_rows(resize_rel_table(rel_height, height + num_slots - 1), height, num_slots)
    return rows_w, rows_h


def combine_relpos(r_w: Tensor, r_h: Tensor, mode: str) -> Tensor:
    """r = r_w + r_h of :class:`~dgmn_mm.models.backbones.dgmn2.RelPosEmb`; both (B, h, H, W, K).

    In mode 'official' the height term is added transposed, as the official code does (its T[x, y] is
    stored at [y, x]); for H != W it is bilinearly resized from (W, H) to (H, W). While tracing, the resize
    is always emitted (exact for H == W) so that the graph holds for every H and W."""
    if mode == 'official':
        B, nh, H, W, K = r_h.shape
        r_h = r_h.transpose(2, 3)  # (B, h, W, H, K): added as if it were (H, W)
        if _tracing_shapes() or H != W:
            r_h = F.interpolate(r_h.reshape(B * nh, W, H, K).permute(0, 3, 1, 2), size=(H, W), mode='bilinear',
                                align_corners=False)
            r_h = r_h.permute(0, 2, 3, 1).reshape(B, nh, H, W, K)
    elif mode != 'corrected':
        raise ValueError(f"relpos mode must be 'official' or 'corrected', got {mode!r}")
    return r_w + r_h


def combine_relpos_backward(grad: Tensor, mode: str):
    """Gradients (g_w, g_h) of :func:`combine_relpos` for ``grad`` (B, h, H, W, K), in closed form.

    ``combine_relpos`` is linear in (r_w, r_h), so no graph is needed: g_w is ``grad`` itself (no copy);
    g_h is ``grad`` as well in mode 'corrected', its transpose of the two map axes (a view) in mode
    'official' with H == W, and for H != W the adjoint of the bilinear (W, H) -> (H, W) resize
    (``upsample_bilinear2d_backward`` on the same layout as autograd hands it, so the values are the ones
    ``torch.autograd.grad`` of ``combine_relpos`` gives, bit for bit). Not for tracing (eager backward only).
    """
    if mode == 'corrected':
        return grad, grad
    if mode != 'official':
        raise ValueError(f"relpos mode must be 'official' or 'corrected', got {mode!r}")
    B, nh, H, W, K = grad.shape
    if H == W:
        return grad, grad.transpose(2, 3)
    g = grad.reshape(B * nh, H, W, K).permute(0, 3, 1, 2)  # as autograd: (B h, K, H, W) view
    g = torch.ops.aten.upsample_bilinear2d_backward(g, [H, W], [B * nh, K, W, H], False, None, None)
    return grad, g.permute(0, 2, 3, 1).reshape(B, nh, W, H, K).transpose(2, 3)

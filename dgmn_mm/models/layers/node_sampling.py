"""Node sampling: the bilinear sampler rho(h_j | V, j, Delta d_j) of the DGMN papers (Eqs. 5 and 8).

For every receiving node i at pixel (y, x) and every tap k = (a, b) of a ``kernel_size x kernel_size``
neighbourhood with sampling rate (dilation) r, the sampled node sits at

    p_k = (y + r * (a - c) + dy_k,  x + r * (b - c) + dx_k),     c = (kernel_size - 1) / 2,

where (dy_k, dx_k) is the predicted random walk (Eq. 4). Its feature is the bilinear interpolation of the
map, with zeros outside. This is exactly the DCNv1 ``deformable_im2col`` rule used by the official code
(a location with not(-1 < py < H and -1 < px < W) reads 0, and so does every out-of-image corner), which
``F.grid_sample(..., padding_mode='zeros', align_corners=False)`` reproduces once pixel coordinates are
normalised as ``(2 p + 1) / size - 1``. Pure PyTorch: runs on CPU and CUDA, differentiable in the features
and in the walks.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...ops.geometry import uniform_grid, walk_to_grid  # noqa: F401  (re-exported)


def sample_nodes(feat: Tensor, walk: Tensor, kernel_size: int = 3, dilation: int = 1) -> Tensor:
    """Sample K = kernel_size**2 nodes per position by bilinear interpolation (zeros outside).

    Args:
        feat (Tensor): (B, C, H, W) feature map (the graph vertices V).
        walk (Tensor): (B, H, W, K, 2) predicted walks, ``[..., 0]`` = dy (rows), ``[..., 1]`` = dx
            (columns), in pixels. Zeros give the uniform (dilated) neighbourhood.
        kernel_size (int): side of the uniform neighbourhood. Defaults to 3.
        dilation (int): sampling rate rho. Defaults to 1.

    Returns:
        Tensor: (B, C, H, W, K) sampled node features.
    """
    B, C, H, W = feat.shape
    K = kernel_size * kernel_size
    if walk.shape != (B, H, W, K, 2):
        raise ValueError(f'walk must have shape {(B, H, W, K, 2)} for a {tuple(feat.shape)} map and '
                         f'kernel_size={kernel_size}, got {tuple(walk.shape)}')
    grid = walk_to_grid(walk.to(feat.dtype), kernel_size, dilation)
    out = F.grid_sample(feat, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    return out.view(B, C, H, W, K)


def offsets_to_walk(offset: Tensor, hw_shape: Tuple[int, int]) -> Tensor:
    """Convert DCN-layout offsets (B, 2K, H, W), channel 2k = dy_k and 2k+1 = dx_k, to (B, H, W, K, 2)."""
    B, C2, H, W = offset.shape
    assert (H, W) == tuple(hw_shape)
    return offset.view(B, C2 // 2, 2, H, W).permute(0, 3, 4, 1, 2)

"""Argument and input checks of :class:`dgmn_mm.models.backbones.DGMN2`.

Kept out of the backbone's file so that the model code stays the paper's. ``frozen_stages`` follows
mmpretrain: ``-1`` (and ``0``) freeze nothing, ``k`` in ``1..4`` freezes stages ``0..k-1`` (their patch
embeddings and layers; BN statistics included).

Input sizes: every size >= 1 px runs in inference (the conv arithmetic never produces an empty map). In
training, a BatchNorm needs more than one value per channel, i.e. ``batch * h_i * w_i >= 2`` for the map
``h_i x w_i`` of every stage whose BN is in training mode (not frozen, not ``norm_eval``);
:func:`check_dgmn2_input` raises a ValueError naming the minimum instead of BatchNorm's anonymous error.
"""
from typing import List, Sequence, Tuple

from .arch import check_bool, check_cfg, check_choice, check_int, check_rate, conv_out_size, normalize_out_indices

__all__ = ['RELPOS_MODES', 'check_dgmn2_args', 'dgmn2_stage_sizes', 'dgmn2_min_train_size', 'check_dgmn2_input',
           'bn_train_stages']

RELPOS_MODES = ('official', 'corrected')


def check_dgmn2_args(arch_settings: dict, in_channels, strides, out_indices, qkv_bias, drop_rate, attn_drop_rate,
                     drop_path_rate, norm_cfg, act_cfg, relpos_mode, attn_impl, attn_impls: Sequence[str],
                     pretrain_img_size, frozen_stages, norm_eval, with_cp, num_stages: int = 4):
    """Check every DGMN2 constructor argument; returns ``(strides, out_indices)`` normalised to tuples.

    Raises:
        ValueError / TypeError: naming the argument and the allowed values.
    """
    for i, (dims, heads) in enumerate(zip(arch_settings['embed_dims'], arch_settings['num_heads'])):
        if dims % heads:
            raise ValueError(f"arch: embed_dims[{i}]={dims} is not divisible by num_heads[{i}]={heads}")
    if arch_settings['embed_dims'][0] < 2:
        raise ValueError(f"arch: embed_dims[0] must be >= 2 (the stem's first convs have half as many "
                         f"channels), got {arch_settings['embed_dims'][0]}")
    for r in arch_settings['mlp_ratios']:
        if isinstance(r, bool) or not isinstance(r, (int, float)) or r <= 0:
            raise ValueError(f"arch['mlp_ratios'] must be positive numbers, got {arch_settings['mlp_ratios']!r}")
    check_int('in_channels', in_channels, 1)
    if isinstance(strides, (str, bytes)) or not hasattr(strides, '__iter__'):
        raise ValueError(f'strides must be (4, s2, s3, s4) with s_i in (1, 2), got {strides!r}')
    strides = tuple(strides)
    if len(strides) != num_stages or strides[0] != 4 or any(s not in (1, 2) or isinstance(s, bool)
                                                            for s in strides[1:]):
        raise ValueError(f'strides must be (4, s2, s3, s4) with s_i in (1, 2), e.g. (4, 2, 2, 2) or the SETR '
                         f'mode (4, 2, 1, 1), got {strides!r}')
    out_indices = normalize_out_indices(out_indices, num_stages)
    check_bool('qkv_bias', qkv_bias)
    check_rate('drop_rate', drop_rate)
    check_rate('attn_drop_rate', attn_drop_rate)
    check_rate('drop_path_rate', drop_path_rate)
    check_cfg('norm_cfg', norm_cfg)
    check_cfg('act_cfg', act_cfg)
    check_choice('relpos_mode', relpos_mode, RELPOS_MODES)
    check_choice('attn_impl', attn_impl, attn_impls)
    # the RelPos tables are sized pretrain_img_size // 4, // 8, // 16, // 32: each needs at least one cell
    check_int('pretrain_img_size', pretrain_img_size, 4 * 2 ** (num_stages - 1))
    check_int('frozen_stages', frozen_stages, -1, num_stages)
    check_bool('norm_eval', norm_eval)
    check_bool('with_cp', with_cp)
    return strides, out_indices


def dgmn2_stage_sizes(size: int, strides: Sequence[int]) -> Tuple[int, ...]:
    """Side length of each stage's map for an input side ``size``: the stem's 3x3 convs (strides 2, 1, 2),
    then one 3x3 conv (padding 1) of stride ``strides[i]`` per later stage."""
    size = conv_out_size(conv_out_size(size, 2), 2)
    sizes = [size]
    for s in strides[1:]:
        size = conv_out_size(size, s)
        sizes.append(size)
    return tuple(sizes)


def dgmn2_min_train_size(strides: Sequence[int], stages: Sequence[int], batch_size: int = 1) -> int:
    """The smallest side ``S`` such that an ``S x 1`` (or larger) input gives ``batch_size * h * w >= 2`` in every
    stage of ``stages`` (square inputs need the same ``S``: a 1-wide side always maps to 1)."""
    if batch_size >= 2 or not stages:
        return 1
    size = 1
    while min(dgmn2_stage_sizes(size, strides)[i] for i in stages) < 2:
        size += 1
    return size


def bn_train_stages(stages) -> List[int]:
    """Indices of the stages whose patch embedding holds a BatchNorm in training mode that normalises over the
    local batch only. A synchronised BN (``nn.SyncBatchNorm``, ``GlooSyncBatchNorm``) in a process group of
    several processes counts values over all of them, so it is not listed then."""
    import torch.distributed as dist
    from torch.nn import SyncBatchNorm
    from torch.nn.modules.batchnorm import _BatchNorm
    synced = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    out = []
    for i, stage in enumerate(stages):
        for m in stage.patch_embed.modules():
            if isinstance(m, _BatchNorm) and m.training and not (
                    synced and (isinstance(m, SyncBatchNorm) or type(m).__name__ == 'GlooSyncBatchNorm')):
                out.append(i)
                break
    return out


def check_dgmn2_input(x, in_channels: int, strides: Sequence[int], bn_train_stages: Sequence[int]) -> None:
    """Raise a ValueError naming the requirement if ``x`` cannot go through DGMN2.

    Args:
        x (Tensor): the input, (B, in_channels, H, W).
        in_channels (int): the backbone's input channels.
        strides (Sequence[int]): the backbone's strides.
        bn_train_stages (Sequence[int]): stages whose patch embedding has a BatchNorm in training mode.
    """
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f'DGMN2 expects an input of shape (B, {in_channels}, H, W), got {tuple(x.shape)}')
    B, _, H, W = x.shape
    if H < 1 or W < 1 or B < 1:
        raise ValueError(f'DGMN2 needs a non-empty input (B, H, W >= 1), got {tuple(x.shape)}')
    if not bn_train_stages or B >= 2:
        return
    hs, ws = dgmn2_stage_sizes(int(H), strides), dgmn2_stage_sizes(int(W), strides)
    small = [i for i in bn_train_stages if hs[i] * ws[i] < 2]
    if small:
        i = small[-1]
        raise ValueError(
            f'DGMN2 in training with BatchNorm needs more than one value per channel in every stage, but a '
            f'batch of 1 image of {H}x{W} px gives stage {i + 1} a {hs[i]}x{ws[i]} map. A batch of 1 needs H or W '
            f'>= {dgmn2_min_train_size(strides, bn_train_stages)} px (strides {tuple(strides)}); otherwise use a '
            f'batch of >= 2, norm_eval=True or frozen stages.')

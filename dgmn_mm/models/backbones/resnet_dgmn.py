"""A ResNet with plug-ins on the *input* of chosen residual blocks (the Non-local placement of the DGMN paper).

"Dynamic Graph Message Passing Networks" (CVPR 2020; TPAMI 2022 Table 3, "+DGMN"): one DGMN module right
before the last residual block of res4, as Non-local networks place their block. mmdet's ``plugins``
(``after_conv1/2/3``) act inside *every* block of a stage and cannot express this, so the backbone is
wrapped here. Registered as ``ResNetWithPreBlockPlugins`` in mmengine's root ``MODELS``.
"""
from typing import Sequence

import torch.nn as nn

from ...registry import MODELS


def _run_pre_block_plugin(block: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: feed ``block.pre_block_plugin(x)`` to the block instead of x."""
    return (block.pre_block_plugin(args[0]), ) + tuple(args[1:])


@MODELS.register_module(name='ResNetWithPreBlockPlugins')
def build_resnet_with_pre_block_plugins(resnet_type: str = 'mmdet.ResNet',
                                        pre_block_plugins: Sequence[dict] = (),
                                        **kwargs) -> nn.Module:
    """Build a ResNet (any registered ResNet-like backbone with ``res_layers``) and insert plug-ins on the
    *input* of chosen residual blocks.

    The plug-in becomes ``<layer>[<block>].pre_block_plugin`` and runs through a forward pre-hook, so all the
    backbone's own parameter names (and its pretrained checkpoints) are unchanged. Example, one DGMN right
    before the last residual block of res4 (Non-local placement, paper Table 3)::

        backbone=dict(type='ResNetWithPreBlockPlugins', resnet_type='mmdet.ResNet', depth=50, ...,
                      pre_block_plugins=[dict(cfg=dict(type='DGMN'), stage=2, block=-1)])

    Args:
        resnet_type (str): registry name of the backbone to build with ``**kwargs``.
        pre_block_plugins (Sequence[dict]): each ``dict(cfg=..., stage=i, block=j)``; ``in_channels`` is
            taken from the block's ``conv1``.
        **kwargs: arguments of the ``resnet_type`` backbone.

    Returns:
        nn.Module: the backbone, with the plug-ins added.
    """
    if not isinstance(resnet_type, str) or not resnet_type:
        raise TypeError(f'resnet_type must be a registry name (str), got {resnet_type!r}')
    if isinstance(pre_block_plugins, dict) or not isinstance(pre_block_plugins, (list, tuple)):
        raise TypeError('pre_block_plugins must be a list/tuple of dict(cfg=..., stage=int, block=int), '
                        f'got {type(pre_block_plugins).__name__}')
    backbone = MODELS.build(dict(type=resnet_type, **kwargs))
    if not hasattr(backbone, 'res_layers'):
        raise TypeError(f'resnet_type {resnet_type!r} built a {type(backbone).__name__} without `res_layers`')
    for plugin in pre_block_plugins:
        if not isinstance(plugin, dict) or set(plugin) != {'cfg', 'stage', 'block'}:
            raise ValueError(f'each pre_block_plugins entry must be dict(cfg=..., stage=int, block=int), '
                             f'got {plugin!r}')
        stage, index = plugin['stage'], plugin['block']
        if not (isinstance(stage, int) and -len(backbone.res_layers) <= stage < len(backbone.res_layers)):
            raise ValueError(f'pre_block_plugins stage must be an int in [0, {len(backbone.res_layers)}), '
                             f'got {stage!r}')
        layer = getattr(backbone, backbone.res_layers[stage])
        if not (isinstance(index, int) and -len(layer) <= index < len(layer)):
            raise ValueError(f'pre_block_plugins block must be an int in [0, {len(layer)}) for stage {stage}, '
                             f'got {index!r}')
        block = layer[index]
        if hasattr(block, 'pre_block_plugin'):
            raise ValueError(f'block {index} of stage {stage} already has a plug-in')
        block.add_module('pre_block_plugin',
                         MODELS.build(dict(plugin['cfg'], in_channels=block.conv1.in_channels)))
        block.register_forward_pre_hook(_run_pre_block_plugin)
    return backbone

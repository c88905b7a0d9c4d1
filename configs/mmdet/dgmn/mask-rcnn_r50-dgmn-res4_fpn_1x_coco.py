# Mask R-CNN R-50-FPN 1x + DGMN (paper Table 3, first part): ONE DGMN module right before the last residual
# block of res4 (the Non-local placement), on the 1024-channel res4 feature, sampling rates (1, 4, 8, 12),
# G = 4. mmdet's `plugins` only act inside every block of a stage, so the backbone is wrapped by
# `ResNetWithPreBlockPlugins` (dgmn_mm/models/backbones/resnet_dgmn.py): same ResNet, same parameter names, plus
# `layer3.5.pre_block_plugin` run on the block's input.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['dgmn_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        type='ResNetWithPreBlockPlugins',
        resnet_type='mmdet.ResNet',
        pre_block_plugins=[
            dict(cfg=dict(type='DGMN', dilations=(1, 4, 8, 12), groups=4), stage=2, block=-1)
        ]))

# crash-safe checkpoints (atomic save, old checkpoints deleted last); interval/max_keep_ckpts from the base
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))

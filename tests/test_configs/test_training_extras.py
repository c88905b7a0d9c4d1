"""Layer-wise lr decay (DGMN2.get_layer_depth with mmpretrain's constructor) and the AMP detection configs."""
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def test_get_layer_depth_tiny():
    import dgmn_mm  # noqa: F401
    from dgmn_mm.models.backbones.dgmn2 import DGMN2
    m = DGMN2(arch='tiny')  # depths (2, 2, 2, 2): stem 0, blocks 1..8, rest 9, num_layers 10
    d = lambda n: m.get_layer_depth(n, 'backbone.')  # noqa: E731
    assert d('backbone.stages.0.patch_embed.conv1.weight') == (0, 10)
    assert d('backbone.stages.0.blocks.0.attn.qkv.weight') == (1, 10)
    assert d('backbone.stages.0.blocks.1.norm1.weight') == (2, 10)
    assert d('backbone.stages.1.patch_embed.conv.weight') == (3, 10)
    assert d('backbone.stages.1.blocks.0.ffn.fc1.weight') == (3, 10)
    assert d('backbone.stages.3.blocks.1.attn.walk.bias') == (8, 10)
    assert d('head.fc.weight') == (9, 10)
    large = DGMN2(arch='large')  # depths (3, 8, 27, 3)
    assert large.get_layer_depth('stages.2.blocks.26.attn.proj.weight') == (3 + 8 + 26 + 1, 43)
    # every parameter gets a depth in [0, num_layers - 1)
    depths = {m.get_layer_depth(n)[0] for n, _ in m.named_parameters()}
    assert depths == set(range(0, 9))


def test_lrd_constructor_assigns_decaying_lrs():
    pytest.importorskip('mmpretrain')
    import dgmn_mm  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS, OPTIM_WRAPPER_CONSTRUCTORS
    cfg = Config.fromfile(str(ROOT / 'configs/mmpretrain/dgmn2/dgmn2-tiny_8xb64-lrd-30e_in1k-ft.py'))
    init_default_scope('mmpretrain')
    cfg.model.backbone.norm_cfg = dict(type='BN')
    model = MODELS.build(cfg.model)
    ow = cfg.optim_wrapper.copy()
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(dict(type=ow.pop('constructor'), optim_wrapper_cfg=ow,
                                                        paramwise_cfg=ow.pop('paramwise_cfg')))
    optim = constructor(model)
    rate, base_lr = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate, cfg.optim_wrapper.optimizer.lr
    lrs = {}
    for group in optim.optimizer.param_groups:
        lrs[group['param_name']] = group['lr']
    assert len(lrs) == sum(1 for p in model.parameters() if p.requires_grad)
    assert math.isclose(lrs['head.fc.weight'], base_lr)
    assert math.isclose(lrs['backbone.stages.0.patch_embed.conv1.weight'], base_lr * rate ** 9)
    assert math.isclose(lrs['backbone.stages.2.blocks.1.attn.qkv.weight'], base_lr * rate ** (9 - 6))
    by_depth = sorted({(model.backbone.get_layer_depth(n, 'backbone.')[0], lr) for n, lr in lrs.items()})
    assert [lr for _, lr in by_depth] == sorted(lr for _, lr in by_depth)  # strictly decaying towards the stem
    assert len(by_depth) == 10


AMP_CONFIGS = [
    'configs/mmdet/dgmn2/mask-rcnn_dgmn2-tiny_fpn_amp-1x_coco.py',
    'configs/mmdet/dgmn2/retinanet_dgmn2-tiny_fpn_amp-1x_coco.py',
    'configs/mmdet/dgmn/mask-rcnn_r50-dgmn-c5_fpn_amp-1x_coco.py',
    'configs/mmdet/dit/mask-rcnn_dit-b1_fpn_amp-1x_coco.py',
]


@pytest.mark.parametrize('path', AMP_CONFIGS, ids=lambda p: Path(p).stem)
def test_amp_config_bf16_training_step(path):
    """The AMP configs use AmpOptimWrapper; one bf16-autocast training step (CPU, tiny input) is finite.

    AmpOptimWrapper itself needs a GPU (fp16 + loss scaling); on CPU the same autocast region is run in
    bfloat16, which exercises every layer's mixed-precision forward and backward."""
    pytest.importorskip('mmdet')
    import dgmn_mm  # noqa: F401
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(str(ROOT / path))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    base = Config.fromfile(str(ROOT / path.replace('_amp-1x', '_1x')))
    assert cfg.model == base.model  # only the optimizer wrapper differs
    if '/dgmn/' in path:
        pytest.skip("the DGMN module's deformable sampling (mmcv DeformConv2d) has no bfloat16 CPU kernel")
    init_default_scope('mmdet')
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.backbone.norm_cfg = dict(type='BN', requires_grad=True) if 'norm_cfg' in cfg.model.backbone \
        else None
    if cfg.model.backbone.norm_cfg is None:
        cfg.model.backbone.pop('norm_cfg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights() if 'dgmn2' not in path else None
    model.train()
    packed = demo_mm_inputs(2, [[3, 128, 128]] * 2, num_items=[3, 3], with_mask='mask' in path)
    data = model.data_preprocessor(packed, True)
    # backbone and neck (our layers) run under bf16 autocast; the heads' mmcv ops (nms, RoIAlign) have no
    # bfloat16 CPU kernels (on CUDA they take fp16), so their inputs are cast back to float32
    extract_feat, dtypes = model.extract_feat, []

    def autocast_extract_feat(x):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            feats = extract_feat(x)
        dtypes.extend(f.dtype for f in feats)
        return tuple(f.float() for f in feats)

    model.extract_feat = autocast_extract_feat
    losses = model(**data, mode='loss')
    assert dtypes and set(dtypes) == {torch.bfloat16}
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss), losses
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

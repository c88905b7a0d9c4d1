"""Our DGMN2 configs train and test with the official recipes (github:fudan-zvg/DGMN2 @ 7b51ee7).

``tests/data/dgmn2_official/recipes.json`` holds the fields that change numbers, read from the official
configs (mmdet 2.12 / mmseg 0.16 config files, the Deformable DETR and DeiT-style argparse defaults and
launch scripts, the detectron2 YAML of Sparse R-CNN) by ``tests/data/dgmn2_official/gen_recipes.py``;
each test compares them with the merged config here, field by field.
"""
import json
import math
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from conftest import REPO_ROOT

with open(osp.join(REPO_ROOT, 'tests', 'data', 'dgmn2_official', 'recipes.json')) as f:
    OFFICIAL = json.load(f)['recipes']
SIZES = ('tiny', 'small', 'medium', 'large')


def cfg(path):
    return Config.fromfile(osp.join(REPO_ROOT, 'configs', path))


def test_imagenet_recipe():
    off = OFFICIAL['imagenet']
    for size in SIZES:
        c = cfg(f'mmpretrain/dgmn2/dgmn2-{size}_8xb128_in1k.py')
        assert c.train_dataloader.batch_size == off['batch_per_gpu'] and c.train_cfg.max_epochs == off['epochs']
        assert c.train_dataloader.sampler.type == 'RepeatAugSampler' and off['repeated_aug']
        opt = c.optim_wrapper.optimizer
        assert opt.type.lower() == off['opt'] and opt.lr == off['lr'] and opt.weight_decay == off['weight_decay']
        assert c.optim_wrapper.get('clip_grad') is None and off['clip_grad'] is None
        assert c.model.backbone.drop_path_rate == off['drop_path']
        assert c.custom_hooks[0].type == 'DropPathScheduleHook'
        assert c.custom_hooks[0].start_epoch == off['drop_path_from_epoch']
        # plain BN per GPU (no SyncBN conversion in the official trainer)
        assert c.model.backbone.norm_cfg.type == 'BN' and not off['sync_bn']
        assert c.model.head.loss.label_smooth_val == off['smoothing']
        augments = {a.type: a.alpha for a in c.model.train_cfg.augments}
        assert augments == {'Mixup': off['mixup'], 'CutMix': off['cutmix']}
        erasing = [t for t in c.train_dataloader.dataset.pipeline if t.type == 'RandomErasing']
        assert erasing[0].erase_prob == off['reprob']
    # AMP is the official precision: the config stays fp32 and tools/train.py --amp switches it on
    assert off['amp']


def test_imagenet_lr_is_timms_per_epoch_schedule():
    """Step the configured schedulers as mmengine does (once per epoch) and compare with timm's
    CosineLRScheduler as the official trainer calls it (warm-up from warmup_lr, cosine over all epochs)."""
    from mmengine.registry import PARAM_SCHEDULERS
    off = OFFICIAL['imagenet']
    c = cfg('mmpretrain/dgmn2/dgmn2-tiny_8xb128_in1k.py')
    assert c.param_scheduler[0].by_epoch and c.param_scheduler[1].by_epoch
    assert not any(s.get('convert_to_iter_based') for s in c.param_scheduler)  # timm steps per epoch
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=off['lr'])
    scheds = [PARAM_SCHEDULERS.build({**s, 'optimizer': opt}) for s in c.param_scheduler]

    def timm_lr(e):
        if e < off['warmup_epochs']:
            return off['warmup_lr'] + e * (off['lr'] - off['warmup_lr']) / off['warmup_epochs']
        return off['min_lr'] + 0.5 * (off['lr'] - off['min_lr']) * (1 + math.cos(math.pi * e / off['epochs']))

    errors = []
    for epoch in range(off['epochs']):
        errors.append(abs(opt.param_groups[0]['lr'] - timm_lr(epoch)) / off['lr'])
        for s in scheds:
            s.step()
    assert errors[0] < 1e-9 and max(errors) < 4e-4  # the warm-up epochs
    assert max(errors[off['warmup_epochs']:]) < 1e-5  # the same curve afterwards (float round-off)


@pytest.mark.parametrize('kind', ['retinanet', 'mask_rcnn'])
def test_retinanet_and_mask_rcnn_recipes(kind):
    off = OFFICIAL[kind]
    for size in SIZES:
        c = cfg(f'mmdet/dgmn2/{kind.replace("_", "-")}_dgmn2-{size}_fpn_1x_coco.py')
        opt = c.optim_wrapper.optimizer
        assert (opt.type, opt.lr, opt.weight_decay) == (off['optimizer']['type'], off['optimizer']['lr'],
                                                        off['optimizer']['weight_decay'])
        assert c.optim_wrapper.get('clip_grad') is None and off['grad_clip'] is None
        warm, step = c.param_scheduler
        assert warm.type == 'LinearLR' and warm.end == off['warmup_iters'] and not warm.by_epoch
        assert warm.start_factor == off['warmup_ratio']
        assert step.milestones == off['lr_steps'] and c.train_cfg.max_epochs == off['max_epochs']
        assert c.train_dataloader.batch_size == off['samples_per_gpu']
        assert c.model.backbone.drop_path_rate == off['drop_path_rate']
        for k, v in off['neck'].items():
            assert c.model.neck[k] == v, (k, c.model.neck[k], v)
        resize = [t for t in c.train_dataloader.dataset.pipeline if t.type == 'Resize'][0]
        assert list(resize.scale) == off['train_img_scale']
        flip = [t for t in c.train_dataloader.dataset.pipeline if t.type == 'RandomFlip'][0]
        assert flip.prob == off['flip_ratio']
        test_cfg = c.model.test_cfg if kind == 'retinanet' else c.model.test_cfg.rcnn
        official_test = off['test_cfg'] if kind == 'retinanet' else off['test_cfg']['rcnn']
        assert test_cfg.score_thr == official_test['score_thr']
        assert test_cfg.nms.iou_threshold == official_test['nms']['iou_threshold']
        assert test_cfg.max_per_img == official_test['max_per_img']


@pytest.mark.parametrize('head', ['fpn', 'setr-naive', 'setr-pup', 'setr-mla'])
def test_segmentation_recipes(head):
    off = OFFICIAL['seg_' + head.replace('-', '_')]
    for size in SIZES:
        c = cfg(f'mmseg/dgmn2/{head}_dgmn2-{size}_4xb2-40k_cityscapes-769x769.py')
        opt = c.optim_wrapper.optimizer
        assert (opt.type, opt.lr, opt.weight_decay) == (off['optimizer']['type'], off['optimizer']['lr'],
                                                        off['optimizer']['weight_decay'])
        poly = c.param_scheduler[0]
        assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', off['poly_power'], off['min_lr'],
                                                                   off['max_iters'])
        assert c.train_cfg.max_iters == off['max_iters'] and c.train_dataloader.batch_size == off['samples_per_gpu']
        assert c.model.backbone.drop_path_rate == off['drop_path_rate']
        dh = c.model.decode_head
        assert dh.align_corners is off['align_corners'] and dh.dropout_ratio == off['dropout_ratio']
        assert dh.num_classes == off['num_classes'] and dh.channels == off['channels']
        assert c.model.get('auxiliary_head') is None and off['auxiliary_head'] is None
        assert c.model.test_cfg.mode == off['test_cfg']['mode']
        assert list(c.model.test_cfg.crop_size) == off['test_cfg']['crop_size']
        assert list(c.model.test_cfg.stride) == off['test_cfg']['stride']
        assert list(c.crop_size) == off['crop_size']
        if head.startswith('setr'):
            assert tuple(c.model.backbone.strides) == (4, 2, 1, 1)  # the official stride-8 outputs
            assert dh.type in ('OfficialSETRUpHead', 'OfficialSETRMLAHead')


def test_deformable_detr_recipe():
    off = OFFICIAL['deformable_detr']
    for path in ('deformable-detr_dgmn2-tiny_8xb2-50e_coco.py', 'deformable-detr_dgmn2-small_8xb2-50e_coco.py',
                 'deformable-detr_dgmn2-medium_8xb2-50e_coco.py',
                 'deformable-detr-refine-twostage_dgmn2-small_8xb2-50e_coco.py'):
        c = cfg('mmdet/dgmn2/' + path)
        # the file name says the batch: 8 GPUs x 2 images, and auto_scale_lr's base is that batch
        assert f'_{off["gpus"]}xb{off["batch_per_gpu"]}-{off["epochs"]}e_' in path
        assert c.train_dataloader.batch_size == off['batch_per_gpu']
        assert c.auto_scale_lr.base_batch_size == off['gpus'] * off['batch_per_gpu']
        opt = c.optim_wrapper.optimizer
        assert opt.lr == off['lr'] and opt.weight_decay == off['weight_decay']
        keys = c.optim_wrapper.paramwise_cfg.custom_keys
        assert opt.lr * keys['backbone'].lr_mult == pytest.approx(off['lr_backbone'])
        assert keys['sampling_offsets'].lr_mult == keys['reference_points'].lr_mult == off['lr_linear_proj_mult']
        assert c.optim_wrapper.clip_grad.max_norm == off['clip_max_norm']
        assert c.train_cfg.max_epochs == off['epochs'] and c.param_scheduler[0].milestones == [off['lr_drop']]
        assert c.model.num_queries == off['num_queries'] and c.model.num_feature_levels == off['num_feature_levels']
        assert c.model.encoder.layer_cfg.ffn_cfg.feedforward_channels == off['dim_feedforward']
        assert c.model.encoder.layer_cfg.ffn_cfg.ffn_drop == off['dropout']
        head = c.model.bbox_head
        assert head.loss_cls.loss_weight == off['cls_loss_coef'] and head.loss_cls.alpha == off['focal_alpha']
        assert head.loss_bbox.loss_weight == off['bbox_loss_coef']
        assert head.loss_iou.loss_weight == off['giou_loss_coef']
        assert c.model.backbone.drop_path_rate == off['drop_path_rate']
        assert c.model.neck.bias is True  # the official input projections have a bias
        # 80 mmdet labels; the converter takes them from the official 91 logits
        assert head.num_classes == 80 and off['num_classes_logits'] == 91


def test_sparse_rcnn_recipe():
    off = OFFICIAL['sparse_rcnn']
    c = cfg('mmdet/dgmn2/sparse-rcnn_dgmn2-small_fpn_300-proposals_crop-ms-480-800-3x_coco.py')
    assert c.train_dataloader.batch_size * 8 == off['ims_per_batch']
    opt = c.optim_wrapper.optimizer
    assert opt.lr == off['base_lr'] and opt.weight_decay == off['weight_decay']
    assert c.optim_wrapper.clip_grad.max_norm == off['clip_value']
    assert c.train_cfg.type == 'IterBasedTrainLoop' and c.train_cfg.max_iters == off['max_iter']
    assert c.train_cfg.val_interval == off['eval_period']
    warm, steps = c.param_scheduler
    assert warm.start_factor == off['warmup_factor'] and warm.end == off['warmup_iters'] and not warm.by_epoch
    assert steps.milestones == off['steps'] and not steps.by_epoch
    assert c.train_dataloader.dataset.filter_cfg.filter_empty_gt is off['filter_empty'] is False
    assert c.model.rpn_head.num_proposals == off['num_proposals']
    assert c.model.backbone.drop_path_rate == off['drop_path_rate']
    scales = [t for t in c.train_dataloader.dataset.pipeline if t.type == 'RandomChoice'][0].transforms[0][0].scales
    assert sorted({min(s) for s in scales}) == off['min_size_train']

# Semantic FPN + DiT-B1 (our reconstruction of arXiv 2308.03409) on ADE20K. Paper Table 5: 32.7 GFLOPs,
# 45.0 mIoU. Recipe (paper Sec. 4.3): 4 GPUs x 4 images, 40k iterations, AdamW lr 1e-4 wd 1e-4, poly 0.9,
# random resize and 512x512 crops; test: short side 512. ImageNet pre-trained backbone (the checkpoint
# written by configs/mmpretrain/dit/dit-b1_8xb128_in1k.py). Budget: the classification mu [R], lambda_C ramps
# over the first 5% (2000) of the iterations.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py',  # mmseg's runtime, imports dgmn_mm
    '../_base_/schedules/adamw_40k.py',  # 40k iterations, AdamW lr 1e-4 wd 1e-4, poly 0.9, crash-safe checkpoints
]

crop_size = (512, 512)
model = dict(
    type='DiTEncoderDecoder',  # EncoderDecoder + loss_budget (Eqs. 6-7)
    budget_loss=dict(type='DiTBudgetLoss', mu=0.253, loss_weight=2.0, warmup_iters=2000),
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='DiT',
        arch='b1',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,  # at every size: the B2-B4 configs keep it
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dit-b1_in1k.pth', prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=4)

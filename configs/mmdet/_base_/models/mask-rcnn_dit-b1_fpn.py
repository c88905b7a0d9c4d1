# Mask R-CNN with a DiT-B1 backbone (our reconstruction of arXiv 2308.03409): mmdet's Mask R-CNN R-50-FPN
# model with the ResNet replaced by DiT, ImageNet pre-trained (the checkpoint written by
# configs/mmpretrain/dit/dit-b1_8xb128_in1k.py), and the budget loss of the DiT paper (Eqs. 6-7). The budget
# keeps the classification ratio mu of the all-open FLOPs [R]; lambda_C ramps over the first 5% of the
# 12 x 7330 iterations of the 1x schedule. The types come from dgmn_mm (imported by ../default_runtime.py).
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'

model = dict(
    type='DiTMaskRCNN',  # MaskRCNN + loss_budget (Eqs. 6-7)
    budget_loss=dict(type='DiTBudgetLoss', mu=0.253, loss_weight=2.0, warmup_iters=4398),
    backbone=dict(
        _delete_=True,
        type='DiT',
        arch='b1',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,  # at every size: the B2-B4 configs keep it
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/dit-b1_in1k.pth', prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]))

# Mask R-CNN + DiT-B1 (our reconstruction of arXiv 2308.03409), COCO 1x. Paper Table 4: 42.9 box / 39.9 mask AP.
# Recipe (paper Sec. 4.2): 8 GPUs x 2 images, AdamW lr 1e-4 wd 1e-4, 12 epochs, 1333x800, ImageNet
# pre-trained backbone (the checkpoint written by configs/mmpretrain/dit/dit-b1_8xb128_in1k.py).
# The budget loss keeps the classification ratio mu of the all-open FLOPs [R]; lambda_C ramps over the
# first 5% of the 12 x 7330 iterations.
_base_ = [
    '../_base_/models/mask-rcnn_dit-b1_fpn.py',  # DiT-B1 in mmdet's Mask R-CNN R-50-FPN + budget loss
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/adamw_1x.py',  # mmdet's 1x with AdamW lr 1e-4 wd 1e-4
    '../_base_/default_runtime.py',  # mmdet's runtime, imports dgmn_mm, crash-safe checkpoints
]

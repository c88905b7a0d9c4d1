# Mask R-CNN + DGMN2-Tiny, COCO 1x (paper Table 8: 31.8M params, 40.1 box / 37.2 mask AP).
# The official recipe (github:fudan-zvg/DGMN2 detection/configs/*_8x2_1x_coco.py, mmdet 2.12): 8 GPUs x 2 images, AdamW lr 1e-4 wd 1e-4, 12 epochs, steps at 8 and
# 11, linear warm-up 500 iters from 0.001, single-scale 1333x800 with flip.
_base_ = [
    '../_base_/models/mask-rcnn_dgmn2-tiny_fpn.py',  # DGMN2-Tiny in mmdet's Mask R-CNN R-50-FPN
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/adamw_1x.py',  # mmdet's 1x with AdamW lr 1e-4 wd 1e-4
    '../_base_/default_runtime.py',  # mmdet's runtime, imports dgmn_mm, crash-safe checkpoints
]

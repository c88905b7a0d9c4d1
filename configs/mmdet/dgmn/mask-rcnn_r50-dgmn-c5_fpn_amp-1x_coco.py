# Automatic mixed precision variant of mask-rcnn_r50-dgmn-c5_fpn_1x_coco.py (mmengine's AmpOptimWrapper:
# fp16 autocast with dynamic loss scaling on CUDA). Not a recipe of the paper; it only changes the precision.
_base_ = './mask-rcnn_r50-dgmn-c5_fpn_1x_coco.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

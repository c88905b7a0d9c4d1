# Automatic mixed precision variant of retinanet_dgmn2-tiny_fpn_1x_coco.py (mmengine's AmpOptimWrapper: fp16 autocast
# with dynamic loss scaling on CUDA). Not a recipe of the paper; it only changes the numeric precision.
_base_ = './retinanet_dgmn2-tiny_fpn_1x_coco.py'

optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

# DGMN2-Medium on ImageNet-1k, same recipe as DGMN2-Tiny. Paper Table 6: 35.8M params, 7.1 GFLOPs, 82.5 top-1.
_base_ = './dgmn2-tiny_8xb128_in1k.py'

model = dict(backbone=dict(arch='medium'))

# DGMN2-Small on ImageNet-1k, same recipe as DGMN2-Tiny. Paper Table 6: 21.0M params, 4.3 GFLOPs, 81.7 top-1.
_base_ = './dgmn2-tiny_8xb128_in1k.py'

model = dict(backbone=dict(arch='small'))

# DGMN2-Large on ImageNet-1k, same recipe as DGMN2-Tiny. Paper Table 6: 48.3M params, 10.4 GFLOPs, 83.3 top-1.
_base_ = './dgmn2-tiny_8xb128_in1k.py'

model = dict(backbone=dict(arch='large'))

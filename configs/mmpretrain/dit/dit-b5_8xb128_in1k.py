# DiT-B5 on ImageNet-1k, the DeiT recipe of dit-b1_8xb128_in1k.py.
# Paper Table 1: 158.0M params, 10.3 GFLOPs, 84.8 top-1. Ours: 157.39M params, 36.74 GFLOPs all open;
# mu = paper GFLOPs / all-open GFLOPs = 0.280.
_base_ = './dit-b1_8xb128_in1k.py'

model = dict(
    budget_loss=dict(mu=0.280),
    backbone=dict(arch='b5', drop_path_rate=0.3))

# DiT-B4 on ImageNet-1k, the DeiT recipe of dit-b1_8xb128_in1k.py.
# Paper Table 1: 126.0M params, 9.9 GFLOPs, 84.5 top-1. Ours: 125.99M params, 40.61 GFLOPs all open;
# mu = paper GFLOPs / all-open GFLOPs = 0.244.
_base_ = './dit-b1_8xb128_in1k.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(arch='b4', drop_path_rate=0.3))

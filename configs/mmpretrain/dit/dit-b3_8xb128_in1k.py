# DiT-B3 on ImageNet-1k, the DeiT recipe of dit-b1_8xb128_in1k.py.
# Paper Table 1: 86.3M params, 6.8 GFLOPs, 84.2 top-1. Ours: 86.09M params, 27.89 GFLOPs all open;
# mu = paper GFLOPs / all-open GFLOPs = 0.244.
_base_ = './dit-b1_8xb128_in1k.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(arch='b3', drop_path_rate=0.3))

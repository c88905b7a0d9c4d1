# DiT-B2 on ImageNet-1k, the DeiT recipe of dit-b1_8xb128_in1k.py.
# Paper Table 1: 55.9M params, 3.8 GFLOPs, 83.1 top-1. Ours: 55.79M params, 9.01 GFLOPs all open;
# mu = paper GFLOPs / all-open GFLOPs.
_base_ = './dit-b1_8xb128_in1k.py'

model = dict(
    budget_loss=dict(mu=0.422),
    backbone=dict(arch='b2', drop_path_rate=0.1))

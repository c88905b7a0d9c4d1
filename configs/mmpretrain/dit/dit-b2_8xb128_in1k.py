# DiT-B2 on ImageNet-1k, the DeiT recipe of dit-b1_8xb128_in1k.py.
# Paper Table 1: 55.9M params, 3.8 GFLOPs, 83.1 top-1. Ours: 55.66M params, 15.56 GFLOPs all open;
# mu = 3.8 / 15.56 = 0.244 (Table 6: "Fully" 15.6 GFLOPs, x4.1).
_base_ = './dit-b1_8xb128_in1k.py'

model = dict(
    budget_loss=dict(mu=0.244),
    backbone=dict(arch='b2', drop_path_rate=0.1))

# Ablation, paper Table 7 "Random" (DiT-B2, 3.8 GFLOPs, 79.4 top-1): random masks instead of learned gates,
# in training and inference. [R] every gate is Bernoulli(p) with p = 0.42 (the all-open FLOPs ratio mu of
# dit-b2, which gives about the same average FLOPs). No budget loss (nothing to train).
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    budget_loss=dict(loss_weight=0.0),
    backbone=dict(row_gate='random', col_gate='random', random_keep=0.42))

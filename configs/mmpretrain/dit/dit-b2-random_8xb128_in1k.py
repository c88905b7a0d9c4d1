# Ablation, paper Table 7 "Random" (DiT-B2, 3.8 GFLOPs, 79.4 top-1): random masks instead of learned gates,
# in training and inference. [R] Every token of every node is routed with probability fixed_keep = 0.2224,
# the keep rate at which DiT-B2 costs the paper's 3.8 GFLOPs on average (DiT.fixed_keep_for(3.8)); the
# column paths stay open, so every scale (and the classifier's stride-32 map) receives its map. No budget
# loss (nothing to train in the gates).
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    budget_loss=dict(loss_weight=0.0),
    backbone=dict(row_gate='random', col_gate='open', fixed_keep=0.2224))

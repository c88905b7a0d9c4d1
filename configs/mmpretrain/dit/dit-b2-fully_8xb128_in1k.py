# Ablation, paper Table 6 "Fully" (DiT-B2, 15.6 GFLOPs, 83.5 top-1): every gate is 1 (all tokens through
# every block, every map down-sampled); the routing space at full cost (ours: 15.56 GFLOPs). No budget.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    budget_loss=dict(loss_weight=0.0),
    backbone=dict(row_gate='open', col_gate='open'))

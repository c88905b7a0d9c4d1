# Ablation, paper Table 6 "Static" (DiT-B2, 3.8 GFLOPs, 80.7 top-1): the gates keep their initial weights
# (not trained) and still select the paths. The budget loss has no trainable gate to act on, so it is off.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    budget_loss=dict(loss_weight=0.0),
    backbone=dict(row_gate='static', col_gate='static'))

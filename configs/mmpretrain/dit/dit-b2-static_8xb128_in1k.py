# Ablation, paper Table 6 "Static" (DiT-B2, 3.8 GFLOPs, 80.7 top-1): the gates keep their initial weights
# (frozen, not trained) and still select the paths. [R] Each node's frozen row gate routes the
# fixed_keep = 0.2224 share of its tokens with the largest initial logit margin, the keep rate at which
# DiT-B2 costs the paper's 3.8 GFLOPs with every map down-sampled (DiT.fixed_keep_for(3.8)); the column gates
# stay open so that no scale is empty. Nothing to train in the gates: no budget loss.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    budget_loss=dict(loss_weight=0.0),
    backbone=dict(row_gate='static', col_gate='open', fixed_keep=0.2224))

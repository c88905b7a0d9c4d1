# Ablation, paper Table 8 "Depth" only (DiT-B2, 3.7 GFLOPs, 82.2 top-1): dynamic depth (row gates), every
# map down-sampled (column gates fixed open), with the budget loss at the table's 3.7 GFLOPs:
# mu = 3.7 / 15.56 = 0.238 of the all-open FLOPs.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    budget_loss=dict(mu=0.238),
    backbone=dict(row_gate='learned', col_gate='open'))

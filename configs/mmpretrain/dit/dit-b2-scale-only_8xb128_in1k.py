# Ablation, paper Table 8 "Scale" only (DiT-B2, 8.4 GFLOPs, 82.9 top-1): dynamic scale (column gates), every
# token through every block of the nodes it reaches (row gates fixed open). [R] The budget loss asks for the
# table's 8.4 GFLOPs: mu = 8.4 / 15.56 = 0.540 of the all-open FLOPs (closing column paths is the only
# saving: with every column gate closed only row 0 runs, 4.5 GFLOPs).
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    budget_loss=dict(mu=0.540),
    backbone=dict(row_gate='open', col_gate='learned'))

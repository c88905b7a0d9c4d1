# Ablation, paper Table 8 "Depth" only (DiT-B2, 3.7 GFLOPs, 82.2 top-1): dynamic depth (row gates), every
# map down-sampled (column gates fixed open), with the budget loss of dit-b2 (mu = 0.422 of the all-open
# FLOPs).
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(backbone=dict(row_gate='learned', col_gate='open'))

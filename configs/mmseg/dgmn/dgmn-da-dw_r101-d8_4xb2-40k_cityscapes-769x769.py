# DGMN w/ DA+DW (paper Table 2): node-conditioned filters and affinities over the *uniform* multi-rate
# neighbourhood (no walks).
_base_ = ['./dgmn-da-dw-ds_r101-d8_4xb2-40k_cityscapes-769x769.py']

model = dict(
    decode_head=dict(dynamic_sampling=False, dynamic_weights=True, dynamic_affinity=True))

# DGMN w/ DA (paper Table 2): dynamic affinities (softmax over the K nodes) with position-shared learned
# filters, uniform multi-rate neighbourhood.
_base_ = ['./dgmn-da-dw-ds_r101-d8_4xb2-40k_cityscapes-769x769.py']

model = dict(
    decode_head=dict(dynamic_sampling=False, dynamic_weights=False, dynamic_affinity=True))

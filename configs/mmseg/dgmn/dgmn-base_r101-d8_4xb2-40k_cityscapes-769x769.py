# DGMN base (paper Sec. 3.2/3.3; not a row of Table 2): plain multi-rate message passing, each message the
# mean of the 9 uniformly sampled nodes at rates (1, 6, 12, 24, 36), fused with the input by the release's
# 1x1 conv + GroupNorm + ReLU (fusion='concat'; no dynamic sampling, filters or affinities).
_base_ = ['./dgmn-da-dw-ds_r101-d8_4xb2-40k_cityscapes-769x769.py']

model = dict(
    decode_head=dict(
        groups=4, dynamic_sampling=False, dynamic_weights=False, dynamic_affinity=False))

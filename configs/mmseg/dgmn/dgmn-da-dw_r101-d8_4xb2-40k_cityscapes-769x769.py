# DGMN w/ DA+DW (paper Table 2, 79.1 mIoU): node-conditioned filters (G = 4, softmax over the 9 nodes) and
# affinities (sigmoid) over the *uniform* 3x3 neighbourhood, one sampling rate phi = {1} (supplementary
# Table 14), fused layout of the release (fusion='concat': one 3x3 conv 512 -> 4x9 + 9, then the 1x1
# fusion conv 2x512 -> 512 + GroupNorm + ReLU). +0.733M params / +6.88 GFLOPs (paper convention) over the
# Dilated FCN, as the paper's +0.73M / +6.88G.
_base_ = ['./dgmn-da-dw-ds_r101-d8_4xb2-40k_cityscapes-769x769.py']

model = dict(
    decode_head=dict(
        dilations=(1, ), groups=4, dynamic_sampling=False, dynamic_weights=True, dynamic_affinity=True))

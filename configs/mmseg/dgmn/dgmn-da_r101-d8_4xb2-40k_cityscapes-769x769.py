# DGMN w/ DA (paper Table 2, 76.5 mIoU): dynamic affinities (softmax over the 9 nodes, Eq. 7) and no filter
# ("G = 0", supplementary Table 15) over the uniform 3x3 neighbourhood, one sampling rate phi = {1}
# (supplementary Table 14), fused layout of the release (fusion='concat': one 3x3 conv 512 -> 9, then the 1x1
# fusion conv 2x512 -> 512 + GroupNorm + ReLU). +0.567M params / +5.32 GFLOPs (paper convention) over the
# Dilated FCN, as the paper's +0.57M / +5.32G.
_base_ = ['./dgmn-da-dw-ds_r101-d8_4xb2-40k_cityscapes-769x769.py']

model = dict(
    decode_head=dict(
        dilations=(1, ), groups=4, dynamic_sampling=False, dynamic_weights=False, dynamic_affinity=True))

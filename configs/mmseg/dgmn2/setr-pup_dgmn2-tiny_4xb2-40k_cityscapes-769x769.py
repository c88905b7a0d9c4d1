# SETR-PUP + DGMN2-Tiny on Cityscapes (paper Table 11: 13.95M params, 78.25 mIoU), the official
# setr_pup_dgmn2_tiny_4x2_769x769_40k_cityscapes.py ('num_conv=4'): three 3x3 convs with bias (512->256,
# 256->256, 256->256), each + SyncBN + ReLU + x2 bilinear upsampling (stride 8 -> 1), conv_seg, and a last
# x2 upsampling (logits at twice the crop size, resized to the labels / image by the loss and predict).
_base_ = ['../_base_/dgmn2_setr.py']
model = dict(decode_head=dict(channels=256, num_convs=3, conv_channels=256))

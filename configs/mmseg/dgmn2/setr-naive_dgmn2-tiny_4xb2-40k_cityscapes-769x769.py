# SETR-Naive + DGMN2-Tiny on Cityscapes (paper Table 11: 11.60M params, 77.23 mIoU), the official
# setr_naive_dgmn2_tiny_4x2_769x769_40k_cityscapes.py: a 1x1 conv_seg on the stage-4 map (stride 8) and
# bilinear resizing to the 769 crop (no input norm, no extra convs).
_base_ = ['../_base_/dgmn2_setr.py']

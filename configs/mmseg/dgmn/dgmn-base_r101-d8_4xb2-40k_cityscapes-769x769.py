# DGMN base (paper Sec. 3.2/3.3): plain multi-rate message passing over the fixed uniform neighbourhood,
# position-shared learned filters, fixed affinity 1/K, learned per-rate weights beta_q.
_base_ = ['./dgmn-da-dw-ds_r101-d8_4xb2-40k_cityscapes-769x769.py']

model = dict(
    decode_head=dict(dynamic_sampling=False, dynamic_weights=False, dynamic_affinity=False))

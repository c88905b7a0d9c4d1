# Deformable DETR+ (iterative box refinement + two-stage) with DGMN2-Small, COCO 50 epochs
# (paper Table 9, "DGMN2-Small+": 34.0M params, 48.5 box AP). Same as upstream's refine-twostage config.
_base_ = './deformable-detr_dgmn2-small_8xb2-50e_coco.py'
model = dict(with_box_refine=True, as_two_stage=True)

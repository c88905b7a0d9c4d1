# Ablation, paper Table 7 "Attention" (DiT-B2, 3.8 GFLOPs, 81.3 top-1): masks from attention probabilities
# instead of learned gates. [R] Each node routes the fixed_keep = 0.2224 share of its tokens that the mean
# token (a global query) attends to most, softmax_n(x_mean . x_n / sqrt(C)) on the normalised tokens; the keep
# rate gives the paper's 3.8 GFLOPs (DiT.fixed_keep_for(3.8)); the column paths stay open. No budget loss.
_base_ = './dit-b2_8xb128_in1k.py'

model = dict(
    budget_loss=dict(loss_weight=0.0),
    backbone=dict(row_gate='attention', col_gate='open', fixed_keep=0.2224))

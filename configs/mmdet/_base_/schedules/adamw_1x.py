# mmdet's 1x schedule (12 epochs, lr x0.1 at epochs 8 and 11, linear warm-up over 500 iterations from 0.001,
# 8 GPUs x 2 images) with AdamW lr 1e-4, weight decay 1e-4 instead of SGD: the 1x recipe of the transformer
# backbones on COCO (TPAMI 2022 Sec. 4.2, Tables 7-8; github:fudan-zvg/DGMN2 detection/configs/*_8x2_1x_coco.py;
# DiT paper Sec. 4.2).
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=0.0001, weight_decay=0.0001))

# The official DGMN2 Cityscapes recipe shared by the Semantic FPN and SETR configs (github:fudan-zvg/DGMN2
# segmentation/configs/_base_/{datasets/cityscapes_769x769,schedules/schedule_40k}.py and the model configs):
# Cityscapes 769x769 crops (resize 2049x1025, ratio 0.5-2.0), 4 GPUs x 2 images, 40k iterations, AdamW
# lr 1e-4 wd 1e-4, poly 0.9 to 0, SyncBN, slide test 769 / stride 513, no auxiliary heads.
_base_ = [
    'mmseg::_base_/datasets/cityscapes_769x769.py',
    './default_runtime.py',  # mmseg's runtime, imports dgmn_mm
    './schedules/adamw_40k.py',  # 40k iterations, AdamW lr 1e-4 wd 1e-4, poly 0.9, crash-safe checkpoints
]

train_dataloader = dict(batch_size=2, num_workers=2)

# mmpretrain's ImageNet-1k pipeline of Swin / DeiT (224 crops, RandAugment m9 mstd0.5, random erasing 0.25,
# bicubic; test: resize 256 -> center crop 224) at 128 images per GPU (8 GPUs x 128 = 1024 per batch).
_base_ = 'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py'

train_dataloader = dict(batch_size=128)
val_dataloader = dict(batch_size=128)
test_dataloader = val_dataloader

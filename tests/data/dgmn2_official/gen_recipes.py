"""Recipe fields of the official DGMN2 configs (github:fudan-zvg/DGMN2 @ 7b51ee7) -> recipes.json."""
import json, re, sys, ast
from mmengine.config import Config
import os
OFF = os.environ.get('DGMN2_OFFICIAL', '/tmp/dgmn2_official')  # `git archive` of the official repo
out = {}
def argparse_defaults(path):
    tree = ast.parse(open(path).read()); d = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'attr', '') == 'add_argument':
            name = node.args[0].value.lstrip('-').replace('-', '_')
            for kw in node.keywords:
                if kw.arg == 'default':
                    try: d[name] = ast.literal_eval(kw.value)
                    except ValueError: pass
                if kw.arg == 'action' and isinstance(kw.value, ast.Constant) and kw.value.value == 'store_true':
                    d.setdefault(name, False)
    return d
# ImageNet: classification/main.py defaults + dist_train.sh arguments, engine.py autocast
cls = argparse_defaults(f'{OFF}/classification/main.py')
sh = open(f'{OFF}/classification/dist_train.sh').read()
eng = open(f'{OFF}/classification/engine.py').read()
main = open(f'{OFF}/classification/main.py').read()
out['imagenet'] = dict(
    batch_per_gpu=int(re.search(r'--batch-size (\d+)', sh)[1]), gpus=8, epochs=int(re.search(r'--epochs (\d+)', sh)[1]),
    lr=cls['lr'] * int(re.search(r'--batch-size (\d+)', sh)[1]) * 8 / 512.0, weight_decay=cls['weight_decay'],
    warmup_epochs=cls['warmup_epochs'], warmup_lr=cls['warmup_lr'], min_lr=cls['min_lr'], drop_path=cls['drop_path'],
    drop_path_from_epoch=int(re.search(r'max_epoch_dp_warm_up = (\d+)', main)[1]),
    amp='torch.cuda.amp.autocast' in eng, sync_bn='convert_sync_batchnorm' in main,
    scheduler_steps='per_epoch' if 'lr_scheduler.step(epoch)' in main else 'per_iter',
    smoothing=cls['smoothing'], mixup=cls['mixup'], cutmix=cls['cutmix'], reprob=cls['reprob'],
    repeated_aug=True, clip_grad=cls['clip_grad'], opt=cls['opt'])
def cfg(path): return Config.fromfile(f'{OFF}/{path}')
for kind, path in [('retinanet', 'detection/configs/retinanet_dgmn2_tiny_fpn_8x2_1x_coco.py'),
                   ('mask_rcnn', 'detection/configs/mask_rcnn_dgmn2_tiny_fpn_8x2_1x_coco.py')]:
    c = cfg(path)
    out[kind] = dict(optimizer=dict(c.optimizer), lr_steps=list(c.lr_config.step), warmup_iters=c.lr_config.warmup_iters,
                     warmup_ratio=c.lr_config.warmup_ratio, max_epochs=c.runner.max_epochs,
                     samples_per_gpu=c.data.samples_per_gpu, gpus=8, drop_path_rate=0.0, grad_clip=c.optimizer_config.grad_clip,
                     neck=dict(c.model.neck), test_cfg=c.model.get('test_cfg') or c.get('test_cfg'),
                     train_img_scale=list(c.data.train.pipeline[2].img_scale), flip_ratio=c.data.train.pipeline[3].flip_ratio)
for head in ('fpn', 'setr_naive', 'setr_pup', 'setr_mla'):
    c = cfg(f'segmentation/configs/{head}_dgmn2_tiny_4x2_769x769_40k_cityscapes.py')
    dh = c.model.decode_head
    out[f'seg_{head}'] = dict(optimizer=dict(c.optimizer), max_iters=c.runner.max_iters, poly_power=c.lr_config.power,
                              min_lr=c.lr_config.min_lr, samples_per_gpu=c.data.samples_per_gpu, gpus=4, drop_path_rate=0.0,
                              align_corners=dh.align_corners, dropout_ratio=dh.dropout_ratio, num_classes=dh.num_classes,
                              channels=dh.channels, test_cfg=dict(c.model.test_cfg), crop_size=list(c.crop_size),
                              auxiliary_head=c.model.get('auxiliary_head'))
d = argparse_defaults(f'{OFF}/deformable_detr/main.py')
out['deformable_detr'] = dict(lr=d['lr'], lr_backbone=d['lr_backbone'], lr_linear_proj_mult=d['lr_linear_proj_mult'],
                              batch_per_gpu=d['batch_size'], gpus=8, weight_decay=d['weight_decay'], epochs=d['epochs'],
                              lr_drop=d['lr_drop'], clip_max_norm=d['clip_max_norm'], num_queries=d['num_queries'],
                              num_feature_levels=d['num_feature_levels'], dim_feedforward=d['dim_feedforward'],
                              dropout=d['dropout'], cls_loss_coef=d['cls_loss_coef'], bbox_loss_coef=d['bbox_loss_coef'],
                              giou_loss_coef=d['giou_loss_coef'], focal_alpha=d['focal_alpha'], drop_path_rate=0.0,
                              num_classes_logits=91)
import yaml
y = {}
for f in ('Base-SparseRCNN.yaml', 'sparsercnn.dgmn2small.300pro.3x.yaml'):
    def merge(a, b):
        for k, v in b.items():
            if isinstance(v, dict): merge(a.setdefault(k, {}), v)
            else: a[k] = v
    merge(y, yaml.safe_load(open(f'{OFF}/sparsercnn/configs/{f}')))
s = y['SOLVER']
out['sparse_rcnn'] = dict(ims_per_batch=s['IMS_PER_BATCH'], base_lr=s['BASE_LR'], steps=list(ast.literal_eval(s['STEPS'])), max_iter=s['MAX_ITER'],
                          warmup_factor=s['WARMUP_FACTOR'], warmup_iters=s['WARMUP_ITERS'], weight_decay=s['WEIGHT_DECAY'],
                          clip_value=s['CLIP_GRADIENTS']['CLIP_VALUE'], eval_period=y['TEST']['EVAL_PERIOD'],
                          filter_empty=y['DATALOADER']['FILTER_EMPTY_ANNOTATIONS'], num_proposals=y['MODEL']['SparseRCNN']['NUM_PROPOSALS'],
                          drop_path_rate=0.0, min_size_train=list(ast.literal_eval(y['INPUT']['MIN_SIZE_TRAIN'])))
json.dump(dict(source='github:fudan-zvg/DGMN2 @ 7b51ee7', recipes=out), open(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'recipes.json'), 'w'), indent=1, default=str)
print(json.dumps(out, indent=0, default=str)[:3000])

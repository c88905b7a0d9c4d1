"""Official DGMN2 checkpoints (github:fudan-zvg/DGMN2) -> dgmn_mm, for every model the official README releases.

The official repository trains five code bases, each with its own parameter names:

============================  ==================================  ==========================================
kind                          official code                       keys (example)
============================  ==================================  ==========================================
``imagenet``                  ``classification/`` (DeiT trainer)  ``patch_embed1.conv1.weight``, ``head.weight``
``mmdet``                     ``detection/`` (mmdet 2.12)         ``backbone.block1.0.attn.qkv.weight``,
                                                                  ``neck.*``, ``bbox_head.*`` / ``roi_head.*``
``mmseg``                     ``segmentation/`` (mmseg 0.16)      ``backbone.*``, ``neck.*``, ``decode_head.*``
``deformable_detr``           ``deformable_detr/`` (Deformable    ``backbone.0.*``, ``input_proj.*``,
                              DETR)                               ``transformer.*``, ``class_embed.*``
``sparse_rcnn``               ``sparsercnn/`` (detectron2)        ``backbone.bottom_up.*``,
                                                                  ``backbone.fpn_lateral2.*``, ``head.*``
============================  ==================================  ==========================================

:func:`convert_official_checkpoint` detects the kind and maps every key to the name it has in the matching
config of this repository (mmpretrain 1.x / mmdet 3.x / mmseg 1.x); the tables were derived from the
official modules and configs (fixtures of their key names and shapes: ``tests/data/dgmn2_official``):

* backbone: ``patch_embed{i}.`` -> ``stages.{i-1}.patch_embed.``, ``block{i}.{j}.`` ->
  ``stages.{i-1}.blocks.{j}.``, ``attn.conv_offset`` -> ``attn.walk``, ``attn.pos_emb`` -> ``attn.rel_pos``,
  ``mlp`` -> ``ffn``;
* mmdet 2.12 FPN / RetinaHead / RPNHead / StandardRoIHead and mmseg 0.16 FPN / FPNHead keep their names in
  mmdet 3 / mmseg 1 (the upstream model zoos still serve their v2.0 / v0.5 checkpoints of these models);
  the official SETR heads keep theirs in :mod:`dgmn_mm.models.decode_heads.setr_official_heads`;
* Deformable DETR -> mmdet 3's ``DeformableDETR``: see :data:`DETR_RULES`; the 91 class logits of the
  official model (DETR's COCO convention: logit index = COCO category id) are reduced to mmdet's 80 by
  taking the rows of the 80 category ids (sigmoid focal classification: every logit is independent, so
  the kept scores are unchanged); the encoder's proposal branch of the two-stage model keeps row 0 first
  (both code bases train that branch as one objectness logit, class 0);
* Sparse R-CNN (detectron2) -> mmdet 3's ``SparseRCNN``: see :data:`SPARSE_RCNN_RULES`.
"""
import argparse
import os.path as osp
import pickle
import re
import zipfile
from collections import Counter
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

KINDS = ('imagenet', 'mmdet', 'mmseg', 'deformable_detr', 'sparse_rcnn')
ARCH_DEPTHS = {'tiny': (2, 2, 2, 2), 'small': (3, 4, 6, 3), 'medium': (3, 4, 18, 3), 'large': (3, 8, 27, 3)}

# COCO category ids of mmdet's 80 labels, in label order (the 91-way DETR logit index is the category id)
COCO_CATEGORY_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
                     28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
                     54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
                     81, 82, 84, 85, 86, 87, 88, 89, 90)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message is ``'<file>: <what is wrong>'``."""


# --------------------------------------------------------------------------------------------------------
# Reading files safely
# --------------------------------------------------------------------------------------------------------
def _safe_globals():
    """What official and mmengine checkpoints pickle besides tensors: the DeiT / Deformable DETR trainers'
    argparse ``args``, and numpy arrays/scalars in training metadata. Nothing that can run code."""
    allowed = [argparse.Namespace]
    try:
        import numpy as np
        core = getattr(np, '_core', None) or np.core
        allowed += [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype]
        allowed += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith('DType')]
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return allowed


def load_checkpoint_file(path: str):
    """``torch.load`` with ``weights_only=True`` (nothing in the file can run code); every failure is one
    :class:`CheckpointError` ``'<path>: <what is wrong>'``."""
    if not osp.exists(path):
        raise CheckpointError(f'{path}: no such file')
    if osp.isdir(path):
        raise CheckpointError(f'{path}: is a directory, not a checkpoint file')
    if osp.getsize(path) == 0:
        raise CheckpointError(f'{path}: is empty')
    try:
        # only what is not registered yet: leaving the context removes its entries from torch's allow-list,
        # which would drop the process-wide ones of dgmn_mm.engine.register_safe_globals
        registered = set(torch.serialization.get_safe_globals())
        with torch.serialization.safe_globals([g for g in _safe_globals() if g not in registered]):
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r'GLOBAL ([\w.]+)', str(e))
        if m:
            raise CheckpointError(f'{path}: refused: the file would call {m[1]} when loaded; a checkpoint holds '
                                  'only tensors and plain data (is it a trusted DGMN2 checkpoint?)') from None
        raise CheckpointError(f'{path}: is not a readable PyTorch checkpoint (truncated or another format: '
                              'its pickle stream is invalid)') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError,
            AttributeError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f'{path}: is not a readable PyTorch checkpoint (truncated or another format: '
                              f'{_first_line(e)})') from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def unwrap_checkpoint(ckpt, path: str = 'checkpoint') -> Dict[str, Tensor]:
    """A bare state dict, or one wrapped in ``state_dict`` (mmengine / mmcv) or ``model`` (DeiT, Deformable
    DETR and detectron2 trainers)."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{path}: holds a {type(ckpt).__name__}, not a state dict')
    for key in ('state_dict', 'model'):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    if not ckpt or not all(isinstance(v, Tensor) for v in ckpt.values()):
        raise CheckpointError(f'{path}: holds no state dict (a dict of tensors)')
    return ckpt


# --------------------------------------------------------------------------------------------------------
# Backbone keys
# --------------------------------------------------------------------------------------------------------
_OFFICIAL_RULES = (  # (official pattern, ours); the first two are exclusive prefixes, the rest renames
    (r'^patch_embed(\d)\.', lambda m: f'stages.{int(m[1]) - 1}.patch_embed.'),
    (r'^block(\d)\.(\d+)\.', lambda m: f'stages.{int(m[1]) - 1}.blocks.{m[2]}.'),
    (r'\.attn\.conv_offset\.', '.attn.walk.'),
    (r'\.attn\.pos_emb\.', '.attn.rel_pos.'),
    (r'\.mlp\.', '.ffn.'),
)
_MM_RULES = (
    (r'^stages\.(\d)\.patch_embed\.', lambda m: f'patch_embed{int(m[1]) + 1}.'),
    (r'^stages\.(\d)\.blocks\.(\d+)\.', lambda m: f'block{int(m[1]) + 1}.{m[2]}.'),
    (r'\.attn\.walk\.', '.attn.conv_offset.'),
    (r'\.attn\.rel_pos\.', '.attn.pos_emb.'),
    (r'\.ffn\.', '.mlp.'),
)


def _rename(key: str, rules) -> Optional[str]:
    new, hits = key, 0
    for pattern, repl in rules[:2]:
        new, n = re.subn(pattern, repl, new)
        hits += n
    if hits != 1:
        return None
    for pattern, repl in rules[2:]:
        new = re.sub(pattern, repl, new)
    return new


def convert_backbone_key(key: str) -> Optional[str]:
    """One official backbone key (no prefix) -> ours, or None if it is not a DGMN2 backbone key."""
    return _rename(key, _OFFICIAL_RULES)


def is_official_state_dict(state_dict: Dict[str, Tensor]) -> bool:
    """True for the official ImageNet layout (top-level ``patch_embed1.*`` / ``block1.*``)."""
    return any(k.startswith(('patch_embed1.', 'block1.')) for k in state_dict)


def backbone_depths(state_dict: Dict[str, Tensor], prefix: str = '') -> Tuple[int, ...]:
    """Blocks per stage of the DGMN2 whose keys (official ``block{i}.{j}`` or ours ``stages.{i}.blocks.{j}``,
    after ``prefix``) are in ``state_dict``."""
    blocks = Counter()
    for key in state_dict:
        if not key.startswith(prefix):
            continue
        k = key[len(prefix):]
        m = re.match(r'^block(\d)\.(\d+)\.norm1\.weight$', k) or \
            re.match(r'^stages\.(\d)\.blocks\.(\d+)\.norm1\.weight$', k)
        if m:
            blocks[int(m[1]) + (0 if k.startswith('block') else 1)] += 1
    return tuple(blocks.get(i, 0) for i in range(1, 5))


def arch_of_depths(depths) -> Optional[str]:
    for name, d in ARCH_DEPTHS.items():
        if tuple(depths) == d:
            return name
    return None


def convert_official_state_dict(state_dict: Dict[str, Tensor], strict: bool = True) -> Dict[str, Tensor]:
    """Official ImageNet keys -> ours: ``backbone.*`` and ``head.fc.*`` (mmpretrain's ``ImageClassifier``
    with a ``LinearClsHead``). Every official key maps to exactly one of ours; an unknown key raises a
    ``KeyError`` naming it (``strict=False`` keeps unknown keys unchanged instead, for the caller to
    report)."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        if key.startswith('head.'):
            out['head.fc.' + key[len('head.'):]] = value
            continue
        new = convert_backbone_key(key)
        if new is None:
            unknown.append(key)
            if not strict:
                out[key] = value
        else:
            out['backbone.' + new] = value
    if unknown and strict:
        raise KeyError(f'{len(unknown)} keys are not DGMN2 keys (is this an official DGMN2 checkpoint?): '
                       f'{unknown[:10]}{" ..." if len(unknown) > 10 else ""}')
    return out


def convert_to_official_state_dict(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Inverse of :func:`convert_official_state_dict` (ours -> official ImageNet keys)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith('head.fc.'):
            out['head.' + key[len('head.fc.'):]] = value
        elif key.startswith('backbone.') and _rename(key[len('backbone.'):], _MM_RULES) is not None:
            out[_rename(key[len('backbone.'):], _MM_RULES)] = value
        else:
            raise KeyError(f'{key!r} is not a key of a DGMN2 classifier')
    return out


# --------------------------------------------------------------------------------------------------------
# Whole models
# --------------------------------------------------------------------------------------------------------
BACKBONE_PREFIX = {'imagenet': '', 'mmdet': 'backbone.', 'mmseg': 'backbone.', 'deformable_detr': 'backbone.0.',
                   'sparse_rcnn': 'backbone.bottom_up.'}

# Deformable DETR (deformable_detr/models/{deformable_detr,deformable_transformer}.py) -> mmdet 3.3
# DeformableDETR; applied in order, the first match wins. Decoder layers: the official order is
# cross_attn -> norm1, self_attn -> norm2 (self-attention runs first), linear -> norm3; mmdet's norms are
# numbered in running order (self_attn, cross_attn, ffn).
DETR_RULES = (
    (r'^input_proj\.([0-2])\.0\.', r'neck.convs.\1.conv.'),
    (r'^input_proj\.([0-2])\.1\.', r'neck.convs.\1.gn.'),
    (r'^input_proj\.3\.0\.', 'neck.extra_convs.0.conv.'),
    (r'^input_proj\.3\.1\.', 'neck.extra_convs.0.gn.'),
    (r'^transformer\.level_embed$', 'level_embed'),
    (r'^transformer\.encoder\.layers\.(\d+)\.self_attn\.', r'encoder.layers.\1.self_attn.'),
    (r'^transformer\.encoder\.layers\.(\d+)\.norm1\.', r'encoder.layers.\1.norms.0.'),
    (r'^transformer\.encoder\.layers\.(\d+)\.norm2\.', r'encoder.layers.\1.norms.1.'),
    (r'^transformer\.encoder\.layers\.(\d+)\.linear1\.', r'encoder.layers.\1.ffn.layers.0.0.'),
    (r'^transformer\.encoder\.layers\.(\d+)\.linear2\.', r'encoder.layers.\1.ffn.layers.1.'),
    (r'^transformer\.decoder\.layers\.(\d+)\.cross_attn\.', r'decoder.layers.\1.cross_attn.'),
    (r'^transformer\.decoder\.layers\.(\d+)\.self_attn\.', r'decoder.layers.\1.self_attn.attn.'),
    (r'^transformer\.decoder\.layers\.(\d+)\.norm2\.', r'decoder.layers.\1.norms.0.'),
    (r'^transformer\.decoder\.layers\.(\d+)\.norm1\.', r'decoder.layers.\1.norms.1.'),
    (r'^transformer\.decoder\.layers\.(\d+)\.norm3\.', r'decoder.layers.\1.norms.2.'),
    (r'^transformer\.decoder\.layers\.(\d+)\.linear1\.', r'decoder.layers.\1.ffn.layers.0.0.'),
    (r'^transformer\.decoder\.layers\.(\d+)\.linear2\.', r'decoder.layers.\1.ffn.layers.1.'),
    (r'^transformer\.reference_points\.', 'reference_points_fc.'),
    (r'^transformer\.enc_output\.', 'memory_trans_fc.'),
    (r'^transformer\.enc_output_norm\.', 'memory_trans_norm.'),
    (r'^transformer\.pos_trans\.', 'pos_trans_fc.'),
    (r'^transformer\.pos_trans_norm\.', 'pos_trans_norm.'),
    (r'^query_embed\.', 'query_embedding.'),
    (r'^class_embed\.(\d+)\.', r'bbox_head.cls_branches.\1.'),
    (r'^bbox_embed\.(\d+)\.layers\.(\d)\.', lambda m: f'bbox_head.reg_branches.{m[1]}.{2 * int(m[2])}.'),
)
# the decoder's references to the prediction heads (with box refinement / two-stage) are the same modules
# as class_embed / bbox_embed: dropped (mmdet passes bbox_head's branches to its decoder)
_DETR_ALIASES = r'^transformer\.decoder\.(class_embed|bbox_embed)\.'

# Sparse R-CNN (sparsercnn/sparsercnn/{detector,head}.py and backbones/dgmn2_fpn.py, detectron2) -> mmdet 3.3
# SparseRCNN (EmbeddingRPNHead, SparseRoIHead with DIIHead stages, FPN neck).
SPARSE_RCNN_RULES = (
    (r'^backbone\.fpn_lateral([2-5])\.', lambda m: f'neck.lateral_convs.{int(m[1]) - 2}.conv.'),
    (r'^backbone\.fpn_output([2-5])\.', lambda m: f'neck.fpn_convs.{int(m[1]) - 2}.conv.'),
    (r'^init_proposal_features\.', 'rpn_head.init_proposal_features.'),
    (r'^init_proposal_boxes\.', 'rpn_head.init_proposal_bboxes.'),
    (r'^head\.head_series\.(\d+)\.self_attn\.', r'roi_head.bbox_head.\1.attention.attn.'),
    (r'^head\.head_series\.(\d+)\.inst_interact\.dynamic_layer\.',
     r'roi_head.bbox_head.\1.instance_interactive_conv.dynamic_layer.'),
    (r'^head\.head_series\.(\d+)\.inst_interact\.norm1\.', r'roi_head.bbox_head.\1.instance_interactive_conv.norm_in.'),
    (r'^head\.head_series\.(\d+)\.inst_interact\.norm2\.',
     r'roi_head.bbox_head.\1.instance_interactive_conv.norm_out.'),
    (r'^head\.head_series\.(\d+)\.inst_interact\.out_layer\.',
     r'roi_head.bbox_head.\1.instance_interactive_conv.fc_layer.'),
    (r'^head\.head_series\.(\d+)\.inst_interact\.norm3\.',
     r'roi_head.bbox_head.\1.instance_interactive_conv.fc_norm.'),
    (r'^head\.head_series\.(\d+)\.norm1\.', r'roi_head.bbox_head.\1.attention_norm.'),
    (r'^head\.head_series\.(\d+)\.norm2\.', r'roi_head.bbox_head.\1.instance_interactive_conv_norm.'),
    (r'^head\.head_series\.(\d+)\.norm3\.', r'roi_head.bbox_head.\1.ffn_norm.'),
    (r'^head\.head_series\.(\d+)\.linear1\.', r'roi_head.bbox_head.\1.ffn.layers.0.0.'),
    (r'^head\.head_series\.(\d+)\.linear2\.', r'roi_head.bbox_head.\1.ffn.layers.1.'),
    (r'^head\.head_series\.(\d+)\.cls_module\.(\d+)\.',
     lambda m: f'roi_head.bbox_head.{m[1]}.cls_fcs.{m[2]}.'),
    (r'^head\.head_series\.(\d+)\.reg_module\.(\d+)\.',
     lambda m: f'roi_head.bbox_head.{m[1]}.reg_fcs.{m[2]}.'),
    (r'^head\.head_series\.(\d+)\.class_logits\.', r'roi_head.bbox_head.\1.fc_cls.'),
    (r'^head\.head_series\.(\d+)\.bboxes_delta\.', r'roi_head.bbox_head.\1.fc_reg.'),
)


def detect_kind(state_dict: Dict[str, Tensor]) -> Optional[str]:
    """Which official code base wrote ``state_dict`` (one of :data:`KINDS`), or None."""
    keys = list(state_dict)

    def has(*prefixes):
        return any(k.startswith(prefixes) for k in keys)

    if has('patch_embed1.', 'block1.'):
        return 'imagenet'
    if has('backbone.0.patch_embed1.', 'backbone.0.block1.'):
        return 'deformable_detr'
    if has('backbone.bottom_up.patch_embed1.', 'backbone.bottom_up.block1.'):
        return 'sparse_rcnn'
    if has('backbone.patch_embed1.', 'backbone.block1.'):
        if has('decode_head.'):
            return 'mmseg'
        if has('bbox_head.', 'rpn_head.', 'roi_head.'):
            return 'mmdet'
    return None


def _apply_rules(key: str, rules) -> Optional[str]:
    for pattern, repl in rules:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    return None


def _detr_class_rows(value: Tensor, encoder_branch: bool) -> Tensor:
    rows = list(COCO_CATEGORY_IDS)
    if encoder_branch:  # the two-stage proposal branch scores objectness with logit 0
        rows = [0] + rows[1:]
    return value[rows].clone()


def convert_official_checkpoint(state_dict: Dict[str, Tensor], kind: Optional[str] = None,
                                source: str = 'checkpoint') -> Tuple[str, Dict[str, Tensor]]:
    """Any official DGMN2 state dict -> ``(kind, state dict of the matching dgmn_mm config)``.

    Raises:
        CheckpointError: ``'<source>: <what is wrong>'`` if the kind cannot be told or a key has no
            counterpart.
    """
    kind = kind or detect_kind(state_dict)
    if kind not in KINDS:
        first = ', '.join(list(state_dict)[:4])
        raise CheckpointError(f'{source}: is not an official DGMN2 checkpoint (no patch_embed1.* / block1.* '
                              f'keys, with or without a backbone prefix; first keys: {first})')
    if kind == 'imagenet':
        out, unknown = {}, []
        for k, v in convert_official_state_dict(state_dict, strict=False).items():
            (out.__setitem__(k, v) if k.startswith(('backbone.', 'head.fc.')) else unknown.append(k))
        _refuse_unknown(unknown, kind, source)
        return kind, out
    prefix = BACKBONE_PREFIX[kind]
    out, unknown = {}, []
    num_classes_branches = sum(1 for k in state_dict if re.match(r'^class_embed\.\d+\.weight$', k))
    two_stage = 'transformer.enc_output.weight' in state_dict
    for key, value in state_dict.items():
        if key.startswith(prefix):
            new = convert_backbone_key(key[len(prefix):])
            if new is None:
                unknown.append(key)
            else:
                out['backbone.' + new] = value
            continue
        if kind in ('mmdet', 'mmseg'):
            out[key] = value  # upstream necks and heads: same names
        elif kind == 'deformable_detr':
            if re.match(_DETR_ALIASES, key):
                continue
            new = _apply_rules(key, DETR_RULES)
            if new is None:
                unknown.append(key)
                continue
            m = re.match(r'^class_embed\.(\d+)\.', key)
            if m:
                value = _detr_class_rows(value, two_stage and int(m[1]) == num_classes_branches - 1)
            out[new] = value
        else:  # sparse_rcnn
            new = _apply_rules(key, SPARSE_RCNN_RULES)
            if new is None:
                unknown.append(key)
            else:
                out[new] = value
    _refuse_unknown(unknown, kind, source)
    return kind, out


def _refuse_unknown(unknown, kind, source):
    if unknown:
        raise CheckpointError(f'{source}: {len(unknown)} keys of this {kind} checkpoint have no counterpart '
                              f'here: {", ".join(unknown[:6])}{" ..." if len(unknown) > 6 else ""}')


# --------------------------------------------------------------------------------------------------------
# Backbone initialisation (DGMN2.init_weights)
# --------------------------------------------------------------------------------------------------------
def official_backbone_state_dict(state_dict: Dict[str, Tensor], source: str = 'checkpoint'):
    """The backbone part of an official checkpoint of any kind, in our keys (no prefix); None if
    ``state_dict`` holds no official backbone keys."""
    for prefix in sorted(set(BACKBONE_PREFIX.values()), key=len, reverse=True):
        if any(k.startswith((prefix + 'patch_embed1.', prefix + 'block1.')) for k in state_dict):
            out, unknown = {}, []
            for key, value in state_dict.items():
                if not key.startswith(prefix) or (prefix == '' and key.startswith(('head.', 'backbone.'))):
                    continue
                new = convert_backbone_key(key[len(prefix):])
                (unknown.append(key) if new is None else out.__setitem__(new, value))
            if prefix == '':  # the ImageNet layout: only the classifier may be there besides the backbone
                unknown += [k for k in state_dict if not k.startswith('head.') and convert_backbone_key(k) is None
                            and k not in unknown]
            _refuse_unknown(unknown, 'DGMN2 backbone', source)
            return out
    return None


def checkpoint_filter_fn(ckpt, model=None, prefix: Optional[str] = None, source: str = 'checkpoint'):
    """Backbone-only state dict (our keys) from any DGMN2 checkpoint: official (any kind: only its backbone
    is taken), a converted classifier, or a detector/segmentor (``prefix='backbone.'`` is the default when
    such keys are present). RelPos tables made for another pre-training size are resized to the model's.

    Raises:
        CheckpointError: ``'<source>: <what is wrong>'`` for a file without DGMN2 weights or with the
            weights of another variant than ``model``'s.
    """
    full = unwrap_checkpoint(ckpt, source)
    state_dict = official_backbone_state_dict(full, source) if prefix is None else None
    if state_dict is None:
        state_dict = full
        if prefix is None and any(k.startswith('backbone.') for k in state_dict):
            prefix = 'backbone.'
        if prefix:
            prefix = prefix if prefix.endswith('.') else prefix + '.'
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not any(k.startswith('stages.') for k in state_dict):
        first = ', '.join(list(full)[:4])
        raise CheckpointError(f'{source}: holds no DGMN2 weights (no patch_embed1.* / block1.* / '
                              f'stages.* keys; first keys: {first})')
    if model is not None:
        from ...ops.geometry import resize_rel_table
        own = model.state_dict()
        ckpt_arch, model_arch = arch_of_depths(backbone_depths(state_dict)), \
            arch_of_depths(backbone_depths(own))
        if ckpt_arch != model_arch and ckpt_arch is not None:
            raise CheckpointError(f'{source}: holds DGMN2-{ckpt_arch} weights (blocks per stage '
                                  f'{ARCH_DEPTHS[ckpt_arch]}), the model is DGMN2-{model_arch or "custom"} '
                                  f'{backbone_depths(own)}')
        for k, v in state_dict.items():
            if k.endswith(('rel_pos.rel_height', 'rel_pos.rel_width')) and k in own \
                    and own[k].shape[0] != v.shape[0]:
                state_dict[k] = resize_rel_table(v.float(), own[k].shape[0]).to(v.dtype)
    return state_dict


def load_backbone_state_dict(model, state_dict: Dict[str, Tensor], source: str = 'checkpoint'):
    """``load_state_dict`` that fails loudly: any missing or unexpected key or wrong shape raises one
    :class:`CheckpointError` naming them."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}' for k in own
             if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        def part(name, items):
            return f'{len(items)} {name} [{", ".join(items[:4])}{" ..." if len(items) > 4 else ""}]'
        raise CheckpointError(f'{source}: does not fit {type(model).__name__}: ' + '; '.join(
            part(n, i) for n, i in (('missing keys', missing), ('unexpected keys', unexpected),
                                    ('wrong shapes', wrong)) if i))
    model.load_state_dict(state_dict, strict=True)

"""Parameters and FLOPs of any dgmn_mm model (classifier, detector or segmentor), DGMN2-aware.

The model is built from a config as ``tools/train.py`` would (SyncBN reverted to BN, eval mode, no weights
loaded: :func:`build_model`) and fed one random image (:func:`make_inputs`; default 224 x 224 for
classifiers, 800 x 1333 for detectors, 769 x 769 for segmentors), padded as the config's data preprocessor
pads (``pad_size_divisor``). The count (:func:`count_flops`) is mmengine's fvcore-style jit counter
(``mmengine.analysis.FlopAnalyzer``) with these DGMN2 handles:

- **FLOPs are multiply-accumulates (MACs)**, as in the paper and in fvcore: a Linear on N tokens is
  N * C_in * C_out, a conv is H_out * W_out * C_out * C_in * k * k / groups. Norm layers, upsampling and
  pooling use fvcore's conventions; softmax, activations and other element-wise ops are not counted.
- ``aten::einsum`` is counted as the product of the sizes of all its indices (exactly the MACs of a
  two-operand contraction; mmengine's default goes through ``np.einsum_path`` on zero arrays of the full
  shapes, which is slow and memory-hungry at detection resolutions). In DGMN2 this covers
  the **messages over the K = 9 sampled nodes** (q . k_j and sum_j a_j v_j: N * K * d each, per head) and
  the **relative-position products** (q . W'[.] and q . H'[.] for the K used rows: N * K * d each, per head).
- ``aten::grid_sampler`` (**the bilinear node sampling**, Eq. 8 of the TPAMI 2022 paper) is counted as 4 MACs
  per sampled value (four corner weights), i.e. 2 (keys and values) * 4 * N * K * d per head and block.
- The walk predictor (Eq. 4), qkv, proj and the FFN are Linears and the patch embeddings convs + BN,
  which the generic counter handles.
- The backbone's default fused attention (``attn_impl='fast'``) runs the operators
  ``dgmn_mm::sampled_attention`` and ``dgmn_mm::relpos_rows``; importing ``dgmn_mm`` registers their
  FLOP handles in mmengine's default table (:mod:`dgmn_mm.ops.flops`), so ``mmengine.analysis``
  (``FlopAnalyzer``, ``get_model_complexity_info``, hence upstream get_flops tools) counts the fused path
  with the same totals as this module. For the per-category breakdown :func:`count_flops` switches every
  ``DGMN2Attention`` to its ``'reference'`` path while counting (same parameters and arithmetic, separate
  ``grid_sample`` / ``einsum`` ops per category; restored afterwards). The counts agree with the closed
  forms of ``dgmn_mm.ops.attention`` (which count 2 x MACs).

Two totals are returned:

- ``impl``: what this implementation computes (the above).
- ``paper``: the convention of the TPAMI 2022 paper's Table 6, i.e. fvcore run on the official code
  (github fudan-zvg/DGMN2): the official RelPos multiplies q with *all* L = S + K - 1 table rows
  (``q @ table.T``, N * d * (L_w + L_h) per head) before keeping K of them, and its CUDA sampling op is
  invisible to fvcore (not counted). The RelPos difference is added analytically per RelPos call from its
  input shape (forward hooks), the sampling counts are removed. With the official code fvcore gives
  2.32 / 4.29 / 7.24 / 10.54 GFLOPs for Tiny / Small / Medium / Large at 224; the paper rounds to
  2.3 / 4.3 / 7.1 / 10.4.

Models with DGMN modules (``dgmn_mm.models.layers.dgmn.DGMN``, CVPR 2020) get a ``dgmn`` entry: the modules'
parameters, their FLOPs as this implementation computes them (``dgmn_complexity``) and in the convention of
the DGMN paper's Table 2 (multiply-adds of the conv weights only, ``dgmn_paper_flops``).

Detectors are traced in ``mode='tensor'`` (``_forward``: backbone, neck and head forward; two-stage and
query-based detectors include their RoI / decoder stages on the proposals of this random image), as
upstream mmdet's get_flops does.

Example::

    from dgmn_mm.analysis import format_result, get_flops
    res = get_flops('configs/mmpretrain/dgmn2/dgmn2-tiny_8xb128_in1k.py')
    res['params'], res['impl']  # 12,101,464 parameters, 2,312,822,784 MACs at 224 x 224
    print(format_result(res, breakdown=True))
"""
import copy
import logging
import math
from collections import Counter, OrderedDict, defaultdict
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope

__all__ = [
    'PAPER_TABLE6', 'FVCORE_OFFICIAL', 'DEFAULT_SHAPES', 'CATEGORIES', 'einsum_macs_jit', 'grid_sampler_jit',
    'load_config', 'drop_pretrained', 'build_model', 'model_kind', 'padded_shape', 'make_inputs', 'input_shape',
    'count_flops', 'get_flops', 'format_result'
]

# Table 6 of the TPAMI 2022 paper (ImageNet, 224 x 224): params (M) and GFLOPs
PAPER_TABLE6 = {'tiny': (12.1, 2.3), 'small': (21.0, 4.3), 'medium': (35.8, 7.1), 'large': (48.3, 10.4)}
# fvcore's count of the official model (github fudan-zvg/DGMN2) at 224 x 224, GFLOPs
FVCORE_OFFICIAL = {'tiny': 2.32, 'small': 4.29, 'medium': 7.24, 'large': 10.54}

DEFAULT_SHAPES = {'classifier': (224, 224), 'detector': (800, 1333), 'segmentor': (769, 769),
                  'other': (224, 224)}

CATEGORIES = OrderedDict([
    ('patch_embed', 'patch embeddings (conv + BN)'),
    ('qkv_proj', 'qkv + proj Linears'),
    ('walk', 'walk predictor (Eq. 4)'),
    ('sampling', 'bilinear node sampling (Eq. 8)'),
    ('messages', 'messages over K nodes (q.k, a.v)'),
    ('relpos', 'RelPos products (K rows)'),
    ('ffn', 'FFN'),
    ('layernorm', 'LayerNorm'),
    ('backbone_other', 'backbone, other'),
    ('rest', 'neck + heads'),
])


# ------------------------------------------------------------------------------------------------------
# op handles
# ------------------------------------------------------------------------------------------------------
def einsum_macs_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of ``torch.einsum``: the product of the sizes of all indices (broadcast dims counted once)."""
    equation = inputs[0].toIValue().replace(' ', '')
    shapes = [get_shape(v) for v in inputs[1].node().inputs()]
    lhs = equation.split('->')[0].split(',')
    if any('.' in term for term in lhs):
        raise NotImplementedError(f'einsum with ellipsis is not supported: {equation}')
    sizes: Dict[str, int] = {}
    for term, shape in zip(lhs, shapes):
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return math.prod(sizes.values())


def grid_sampler_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """Bilinear ``grid_sample``: 4 MACs per output value (mode 0 = bilinear; nearest counts 0)."""
    mode = inputs[2].toIValue() if len(inputs) > 2 else 0
    out = math.prod(get_shape(outputs[0]))
    return 4 * out if mode == 0 else 0


# ------------------------------------------------------------------------------------------------------
# building models and inputs from a config
# ------------------------------------------------------------------------------------------------------
def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """``Config.fromfile(path)`` with ``cfg_options`` (``--cfg-options`` style dict) merged in."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def drop_pretrained(obj):
    """Remove, in place, every ``init_cfg`` of type 'Pretrained' and every ``pretrained`` path from a model
    config (nested dicts and lists): weights need not exist to count, time or export a model."""
    if isinstance(obj, dict):
        init_cfg = obj.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            obj['init_cfg'] = None
        if obj.get('pretrained') is not None and isinstance(obj.get('pretrained'), str):
            obj['pretrained'] = None
        for v in obj.values():
            drop_pretrained(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            drop_pretrained(v)


def build_model(cfg: Config, init: bool = True) -> nn.Module:
    """Build ``cfg.model`` in the config's scope, SyncBN -> BN, eval mode.

    With ``init`` the model's own random initialisation (``init_weights``) runs with every 'Pretrained'
    ``init_cfg`` removed, so that data-dependent parts (e.g. Sparse R-CNN's learned proposal boxes, which
    ``init_weights`` sets to the whole image) behave as in a real model; no file is read."""
    import dgmn_mm  # noqa: F401  (registers DGMN2 and the necks)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model_cfg = copy.deepcopy(cfg.model)
    drop_pretrained(model_cfg)
    model = MODELS.build(model_cfg)
    if init:
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs every parameter
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    model = revert_sync_batchnorm(model)
    return model.eval()


def model_kind(model: nn.Module) -> str:
    """'detector', 'segmentor', 'classifier' (mmdet / mmseg / mmpretrain base classes) or 'other'."""
    names = {c.__name__ for c in type(model).__mro__}
    if 'BaseDetector' in names:
        return 'detector'
    if 'BaseSegmentor' in names:
        return 'segmentor'
    if 'BaseClassifier' in names:
        return 'classifier'
    return 'other'


def padded_shape(model: nn.Module, shape: Sequence[int]) -> tuple:
    """The batch shape the model's data preprocessor would produce for one image of ``shape``."""
    h, w = shape
    pre = getattr(model, 'data_preprocessor', None)
    div = getattr(pre, 'pad_size_divisor', 1) or 1
    size = getattr(pre, 'size', None)  # mmseg: pad to the crop size
    if size is not None:
        h, w = max(h, size[0]), max(w, size[1])
    size_div = getattr(pre, 'size_divisor', None)
    if size_div:
        div = size_div
    return int(math.ceil(h / div) * div), int(math.ceil(w / div) * div)


def make_inputs(model: nn.Module, shape: Sequence[int], batch_size: int = 1, pad: bool = True):
    """(inputs, forward) for a model: ``forward(inputs)`` runs its ``mode='tensor'`` path."""
    kind = model_kind(model)
    h, w = padded_shape(model, shape) if pad else tuple(shape)
    inputs = torch.randn(batch_size, 3, h, w)
    if kind == 'detector':
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        samples = []
        for _ in range(batch_size):
            s = DetDataSample()
            s.set_metainfo(dict(img_shape=tuple(shape), ori_shape=tuple(shape), pad_shape=(h, w),
                                batch_input_shape=(h, w), scale_factor=(1., 1.), img_id=0))
            # Sparse R-CNN's tensor-mode forward unpacks (empty) ground truth
            s.gt_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
            samples.append(s)
        return inputs, partial(model.forward, data_samples=samples, mode='tensor')
    if kind in ('segmentor', 'classifier'):
        return inputs, partial(model.forward, mode='tensor')
    return inputs, model.forward


class _Wrapper(nn.Module):
    """Lets the jit tracer see ``forward(inputs)`` with the keyword arguments bound."""

    def __init__(self, model: nn.Module, forward):
        super().__init__()
        self.model = model
        self._fwd = forward

    def forward(self, x):
        return self._fwd(x)


def input_shape(shape: Optional[Sequence[int]], kind: str) -> Tuple[int, int]:
    """(H, W) from a ``--shape`` value: None -> the default of the model kind, one value -> a square."""
    if not shape:
        if kind not in DEFAULT_SHAPES:
            raise ValueError(f'kind must be one of {sorted(DEFAULT_SHAPES)}, got {kind!r}')
        return DEFAULT_SHAPES[kind]
    if len(shape) not in (1, 2) or any(int(s) <= 0 for s in shape):
        raise ValueError(f'shape must be one or two positive sizes (H W), got {tuple(shape)}')
    return (int(shape[0]), int(shape[0])) if len(shape) == 1 else (int(shape[0]), int(shape[1]))


# ------------------------------------------------------------------------------------------------------
# counting
# ------------------------------------------------------------------------------------------------------
def count_flops(model: nn.Module, inputs: torch.Tensor, forward=None) -> Dict[str, Any]:
    """Count MACs of ``forward(inputs)`` (default ``model(inputs)``).

    Returns a dict with ``params``, ``impl`` (total MACs of this implementation), ``paper`` (the Table 6
    convention, see the module doc), ``by_operator``, ``categories`` (the DGMN2 breakdown, impl
    convention), ``relpos_official_extra`` and ``input_shape``.
    """
    from dgmn_mm.models.backbones.dgmn2 import DGMN2, DGMN2Attention, RelPosEmb

    relpos_calls = []

    def relpos_hook(module, args, output):
        B, nh, H, W, d = args[0].shape
        relpos_calls.append((B * nh * H * W * d, H, W, module.num_samples))

    handles = [m.register_forward_hook(relpos_hook) for m in model.modules() if isinstance(m, RelPosEmb)]
    # the fused 'fast' attention is one operator per layer (counted as a whole by its mmengine handle):
    # count the 'reference' path, which does the same arithmetic in separate ops, for the breakdown
    impls = {m: m.attn_impl for m in model.modules() if isinstance(m, DGMN2Attention)}
    for m in impls:
        m.attn_impl = 'reference'
    wrapper = _Wrapper(model, forward or model.forward)
    try:
        analyzer = FlopAnalyzer(wrapper, (inputs, ))
        analyzer.set_op_handle('aten::einsum', einsum_macs_jit, 'aten::grid_sampler', grid_sampler_jit)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        analyzer.tracer_warnings('none')
        with torch.no_grad():
            total = analyzer.total()
            by_op = dict(analyzer.by_operator())
            by_mod_op = analyzer.by_module_and_operator()
    finally:
        for h in handles:
            h.remove()
        for m, impl in impls.items():
            m.attn_impl = impl

    # exclusive counts per module -> DGMN2 categories
    names = dict(wrapper.named_modules())
    children = defaultdict(list)
    for name in names:
        if name:
            children[name.rsplit('.', 1)[0] if '.' in name else ''].append(name)
    backbone_prefixes = [n for n, m in names.items() if isinstance(m, DGMN2)]
    cats = Counter()
    for name, module in names.items():
        own = Counter(by_mod_op.get(name, {}))
        for child in children[name]:
            own.subtract(by_mod_op.get(child, {}))
        own = {k: v for k, v in own.items() if v}
        if not own:
            continue
        in_backbone = any(name == p or name.startswith(p + '.') for p in backbone_prefixes)
        if not in_backbone:
            cats['rest'] += sum(own.values())
            continue
        leaf = name.rsplit('.', 1)[-1]
        if isinstance(module, RelPosEmb) or '.rel_pos' in name:
            cats['relpos'] += sum(own.values())
        elif name.endswith('.attn'):
            cats['sampling'] += own.pop('grid_sampler', 0)
            cats['messages'] += own.pop('einsum', 0)
            cats['backbone_other'] += sum(own.values())
        elif leaf in ('qkv', 'proj') and '.attn' in name:
            cats['qkv_proj'] += sum(own.values())
        elif leaf == 'walk':
            cats['walk'] += sum(own.values())
        elif '.ffn' in name:
            cats['ffn'] += sum(own.values())
        elif leaf in ('norm1', 'norm2') and '.blocks.' in name:
            cats['layernorm'] += sum(own.values())
        elif '.patch_embed' in name:
            cats['patch_embed'] += sum(own.values())
        else:
            cats['backbone_other'] += sum(own.values())
    # the official RelPos multiplies q with all W+K-1 (H+K-1) rows; ours with the K used ones
    relpos_extra = sum(ndq * ((W + K - 1) + (H + K - 1) - 2 * K) for ndq, H, W, K in relpos_calls)
    paper = total - cats['sampling'] + relpos_extra
    return dict(params=sum(p.numel() for p in model.parameters()), impl=int(total), paper=int(paper),
                by_operator=by_op, categories={k: int(cats[k]) for k in CATEGORIES},
                relpos_official_extra=int(relpos_extra), input_shape=tuple(inputs.shape))


def get_flops(config: str, shape: Optional[Sequence[int]] = None, cfg_options: Optional[dict] = None,
              pad: bool = True) -> Dict[str, Any]:
    """Build the model of ``config`` and count its parameters and FLOPs (see :func:`count_flops`).

    Args:
        config (str): config file.
        shape (Sequence[int], optional): input (H, W); default by model kind (:data:`DEFAULT_SHAPES`).
        cfg_options (dict, optional): settings merged into the config.
        pad (bool): pad the input as the config's data preprocessor pads. Defaults to True.

    Returns:
        dict: :func:`count_flops`'s result plus ``config``, ``kind``, ``shape`` (the requested one) and, for
        models with DGMN modules, ``dgmn`` (``modules``, ``params``, ``flops``, ``paper_flops``).
    """
    cfg = load_config(config, cfg_options)
    model = build_model(cfg)
    shape = tuple(shape) if shape else DEFAULT_SHAPES[model_kind(model)]
    inputs, forward = make_inputs(model, shape, pad=pad)
    from dgmn_mm.models.layers.dgmn import dgmn_report, record_dgmn_inputs
    with record_dgmn_inputs(model) as dgmn_shapes:  # the map each DGMN module (CVPR 2020) runs on
        result = count_flops(model, inputs, forward)
    if dgmn_shapes:
        result['dgmn'] = dgmn_report(dgmn_shapes)
    result.update(config=config, kind=model_kind(model), shape=shape)
    return result


def format_result(res: Dict[str, Any], convention: str = 'impl', breakdown: bool = False) -> str:
    """The text report of :func:`get_flops` (headline total in ``convention``: 'impl' or 'paper').

    ``breakdown`` adds the DGMN2 table (patch embeddings, qkv + proj, walk predictor, node sampling, messages
    over K nodes, RelPos, FFN, LayerNorm, rest of the model) and a per-operator table."""
    if convention not in ('impl', 'paper'):
        raise ValueError(f"convention must be 'impl' or 'paper', got {convention!r}")
    g = 1e9
    lines = [
        '=' * 64,
        f"Config:      {res.get('config', '-')}",
        f"Model kind:  {res.get('kind', '-')}",
        f"Input shape: {res['input_shape']} (requested {res.get('shape')})",
        f"Params:      {res['params'] / 1e6:.3f} M",
        f"FLOPs ({convention}, MACs): {res[convention] / g:.3f} G",
        f"  impl  (this implementation, incl. sampling, RelPos on K rows): {res['impl'] / g:.3f} G",
        f"  paper (fvcore on the official code: RelPos on all L rows, no sampling): {res['paper'] / g:.3f} G",
    ]
    if res.get('dgmn'):  # DGMN module: the totals above miss its DeformConv2d; the paper counts fewer ops
        d = res['dgmn']
        lines += [f"DGMN modules ({d['modules']}): {d['params'] / 1e6:.3f} M params",
                  f"  ours  (dgmn_complexity: every op of the module): {d['flops'] / g:.3f} G",
                  f"  paper (conv-weight multiply-adds only, the DGMN paper's Table 2 convention): "
                  f"{d['paper_flops'] / g:.3f} G"]
    if breakdown:
        lines.append('-' * 64)
        lines.append('DGMN2 breakdown (impl convention):')
        for key, label in CATEGORIES.items():
            v = res['categories'][key]
            lines.append(f'  {label:<40s} {v / g:9.4f} G  {100 * v / max(res["impl"], 1):5.1f} %')
        lines.append(f"  {'(paper: + RelPos on all L rows)':<40s} {res['relpos_official_extra'] / g:9.4f} G")
        lines.append('-' * 64)
        lines.append('By operator (impl convention):')
        for op, v in sorted(res['by_operator'].items(), key=lambda kv: -kv[1]):
            lines.append(f'  {op:<40s} {v / g:9.4f} G')
    lines.append('=' * 64)
    return '\n'.join(lines)

"""The complexity constraint of DiT (Eqs. 5-7) and the models that add it to their losses.

How the budget loss reaches the total loss: the :class:`~dgmn_mm.models.backbones.dit.DiT` backbone returns
a :class:`~dgmn_mm.models.backbones.dit.DiTOutputs` (a tuple of maps that also carries ``complexity['flops']``,
the FLOPs each image used, Eq. 5, differentiable through the gate probabilities in training). A thin subclass
of each upstream model calls the upstream ``loss()`` (which runs the backbone) while a forward hook of that
call only catches the backbone's output, then adds ``loss_budget = λ_C · L_C`` (Eqs. 6-7) and the logged ratio
``budget_ratio`` (C / C^base, no gradient) to the loss dict; mmengine's ``parse_losses`` sums every key
containing ``'loss'``. Configs only change ``type``:

====================  =================================  ======================
registered name       upstream class                     codebase
====================  =================================  ======================
DiTImageClassifier    mmpretrain ImageClassifier          mmpretrain
DiTRetinaNet          mmdet RetinaNet                     mmdet
DiTMaskRCNN           mmdet MaskRCNN                      mmdet
DiTCascadeRCNN        mmdet CascadeRCNN                   mmdet
DiTATSS               mmdet ATSS                          mmdet
DiTGFL                mmdet GFL                           mmdet
DiTSparseRCNN         mmdet SparseRCNN                    mmdet
DiTEncoderDecoder     mmseg EncoderDecoder                mmseg
====================  =================================  ======================

e.g. ``model = dict(type='DiTImageClassifier', budget_loss=dict(type='DiTBudgetLoss', mu=0.4), backbone=
dict(type='DiT', arch='b1'), ...)``.

The subclasses are made lazily (on first build, or on first attribute access of this module: pickling works)
so that ``import dgmn_mm`` does not import the models of mmpretrain, mmdet or mmseg (with mmpretrain installed,
only its model hub ``mmpretrain.apis`` is imported, to learn the model index). The registry holds a small factory
function under each name (:func:`dgmn_mm.registry.register_lazy`; a placeholder naming the extra when the
codebase is not installed); ``type(model).__name__`` is the class name above and ``isinstance(model,
RetinaNet)`` holds.
"""
import importlib
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..registry import MODELS, register_lazy


@MODELS.register_module()
class DiTBudgetLoss(nn.Module):
    """Eqs. 6-7: ``λ_C · (C / C^base - μ)²``, C the FLOPs of Eq. 5 for each image.

    Args:
        mu (float): μ, the target ratio C / C^base.
        loss_weight (float): λ_C. Defaults to 2 [R].
        warmup_iters (int): [R] λ_C ramps linearly from 0 over this many training calls (our choice: the first
            5% of training). 0 = no ramp. The count is a buffer, so it survives a resume.
        base (str): C^base: 'dense' [R] (all gates open, the routing space's maximum; μ = target FLOPs /
            all-open FLOPs) or 'pvtv2' (the PVTv2 baseline of the same widths, as written in Eq. 6).
        reduction (str): [R] 'image' (the default): ``mean_b (C_b / C^base - μ)²``, the constraint applied to
            every image; 'batch': ``(mean_b C_b / C^base - μ)²``, which lets images trade compute.
    """

    def __init__(self, mu: float, loss_weight: float = 2.0, warmup_iters: int = 0, base: str = 'dense',
                 reduction: str = 'image'):
        super().__init__()
        for name, value in (('mu', mu), ('loss_weight', loss_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f'{name} must be a number >= 0, got {value!r}')
        if isinstance(warmup_iters, bool) or not isinstance(warmup_iters, int) or warmup_iters < 0:
            raise ValueError(f'warmup_iters must be an int >= 0, got {warmup_iters!r}')
        if base not in ('dense', 'pvtv2'):
            raise ValueError(f"base must be 'dense' or 'pvtv2', got {base!r}")
        if reduction not in ('image', 'batch'):
            raise ValueError(f"reduction must be 'image' or 'batch', got {reduction!r}")
        self.mu, self.loss_weight, self.warmup_iters = mu, loss_weight, warmup_iters
        self.base, self.reduction = base, reduction
        self.register_buffer('num_calls', torch.zeros((), dtype=torch.long))

    def ratio(self, complexity: Dict[str, object]) -> Tensor:
        """C / C^base per image, (B, )."""
        base = complexity['dense_flops'] if self.base == 'dense' else complexity['pvtv2_flops']
        if base is None:
            raise ValueError("base='pvtv2' needs a named DiT arch (b1..b5)")
        return complexity['flops'] / float(base)

    def current_weight(self) -> float:
        if self.warmup_iters <= 0:
            return self.loss_weight
        return self.loss_weight * min(1.0, float(self.num_calls) / self.warmup_iters)

    def forward(self, complexity: Dict[str, object]) -> Tensor:
        ratio = self.ratio(complexity)
        if self.reduction == 'batch':
            loss = (ratio.mean() - self.mu) ** 2
        else:
            loss = ((ratio - self.mu) ** 2).mean()
        weight = self.current_weight()
        if self.training:
            self.num_calls += 1
        return weight * loss

    def extra_repr(self) -> str:
        return (f'mu={self.mu}, loss_weight={self.loss_weight}, warmup_iters={self.warmup_iters}, '
                f'base={self.base}, reduction={self.reduction}')


class DiTBudgetMixin:
    """Adds ``loss_budget`` (and the logged ``budget_ratio``) to the loss dict of the upstream model.

    Args:
        budget_loss (dict): config of :class:`DiTBudgetLoss` (``type`` may be omitted).
        *args, **kwargs: the upstream model's arguments.
    """

    def __init__(self, *args, budget_loss: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        from .backbones.dit import DiT
        if not isinstance(self.backbone, DiT):
            raise TypeError(f'{type(self).__name__} needs a DiT backbone, got {type(self.backbone).__name__}')
        cfg = dict(type='DiTBudgetLoss', mu=0.5)
        cfg.update(budget_loss or {})
        self.budget_loss = MODELS.build(cfg)

    def loss(self, *args, **kwargs) -> dict:
        caught = []
        handle = self.backbone.register_forward_hook(lambda module, inputs, output: caught.append(output))
        try:
            losses = super().loss(*args, **kwargs)
        finally:
            handle.remove()
        if not caught:
            raise RuntimeError(f'{type(self).__name__}.loss() did not run the backbone')
        complexity = caught[-1].complexity
        losses['loss_budget'] = self.budget_loss(complexity)
        losses['budget_ratio'] = self.budget_loss.ratio(complexity).detach().mean()
        return losses


_UPSTREAM = {
    'DiTImageClassifier': ('mmpretrain.models', 'ImageClassifier'),
    'DiTRetinaNet': ('mmdet.models', 'RetinaNet'),
    'DiTMaskRCNN': ('mmdet.models', 'MaskRCNN'),
    'DiTCascadeRCNN': ('mmdet.models', 'CascadeRCNN'),
    'DiTATSS': ('mmdet.models', 'ATSS'),
    'DiTGFL': ('mmdet.models', 'GFL'),
    'DiTSparseRCNN': ('mmdet.models', 'SparseRCNN'),
    'DiTEncoderDecoder': ('mmseg.models', 'EncoderDecoder'),
}
_CLASSES: Dict[str, type] = {}


def _get_class(name: str) -> type:
    if name not in _CLASSES:
        module, base_name = _UPSTREAM[name]
        base = getattr(importlib.import_module(module), base_name)
        _CLASSES[name] = type(name, (DiTBudgetMixin, base), {
            '__module__': __name__,
            '__qualname__': name,
            '__doc__': f'{base_name} with the DiT budget loss (Eqs. 6-7), see {__name__}.',
        })
    return _CLASSES[name]


def __getattr__(name: str):  # PEP 562: ``dit_models.DiTRetinaNet`` (and unpickling) create the class
    if name in _UPSTREAM:
        return _get_class(name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


for _name, (_module, _) in _UPSTREAM.items():
    # a factory that makes the class on first build, or a placeholder naming the extra without the codebase
    register_lazy(_name, _module.split('.')[0], lambda _name=_name: _get_class(_name))
del _name, _module

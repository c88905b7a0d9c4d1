"""Delayed stochastic depth, as in the official DGMN2 ImageNet trainer.

The official trainer builds the model with ``drop_path=0.1``, sets every DropPath to 0 before training
(``reset_drop_path(0)``) and switches the scheduled rates back on at epoch 100. This hook does the same
for any model: it remembers each DropPath's rate, keeps it at 0 for epochs ``< start_epoch`` and restores
it from ``start_epoch`` on. Unlike the official loop (which only re-enables it when the epoch equals 100
exactly), a run resumed after ``start_epoch`` gets stochastic depth back.
"""
from mmcv.cnn.bricks import DropPath
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS


@HOOKS.register_module()
class DropPathScheduleHook(Hook):
    """Keep every ``DropPath`` at rate 0 until ``start_epoch``, then restore its configured rate.

    Args:
        start_epoch (int): first epoch (0-based) trained with stochastic depth. Defaults to 100.
    """
    priority = 'NORMAL'

    def __init__(self, start_epoch: int = 100):
        self.start_epoch = start_epoch
        self._rates = None

    def before_train_epoch(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        drop_paths = [m for m in model.modules() if isinstance(m, DropPath)]
        if self._rates is None:
            self._rates = [m.drop_prob for m in drop_paths]
        active = runner.epoch >= self.start_epoch
        for m, rate in zip(drop_paths, self._rates):
            m.drop_prob = rate if active else 0.

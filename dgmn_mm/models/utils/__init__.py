"""Helpers shared by the dgmn_mm models."""
from .arch import (check_bool, check_cfg, check_choice, check_int, check_rate, conv_out_size,
                   normalize_out_indices, parse_arch)

__all__ = ['parse_arch', 'normalize_out_indices', 'check_choice', 'check_rate', 'check_int', 'check_cfg',
           'check_bool', 'conv_out_size']

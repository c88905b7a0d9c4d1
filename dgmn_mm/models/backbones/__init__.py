from .dgmn2 import DGMN2
from .dit import DiT

__all__ = ['DGMN2', 'DiT']

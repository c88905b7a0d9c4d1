from .dgmn2 import DGMN2

__all__ = ['DGMN2']

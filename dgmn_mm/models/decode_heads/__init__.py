from .dgmn_head import DGMNHead

__all__ = ['DGMNHead']

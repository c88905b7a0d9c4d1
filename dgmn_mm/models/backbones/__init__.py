from .dgmn2 import DGMN2
from .dit import DiT
from .resnet_dgmn import build_resnet_with_pre_block_plugins

__all__ = ['DGMN2', 'DiT', 'build_resnet_with_pre_block_plugins']

from .dgmn import DGMN, build_resnet_with_pre_block_plugins, dgmn_complexity
from .node_sampling import sample_nodes

__all__ = ['DGMN', 'build_resnet_with_pre_block_plugins', 'dgmn_complexity', 'sample_nodes']

from .node_sampling import sample_nodes

__all__ = ['sample_nodes']
from .dgmn import DGMN, build_resnet_with_pre_block_plugins, dgmn_complexity  # noqa: F401

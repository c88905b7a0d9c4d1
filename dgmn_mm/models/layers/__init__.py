from .dgmn import DGMN, dgmn_complexity, dgmn_paper_flops
from .node_sampling import sample_nodes

__all__ = ['DGMN', 'dgmn_complexity', 'dgmn_paper_flops', 'sample_nodes']

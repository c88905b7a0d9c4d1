from .node_sampling import sample_nodes

__all__ = ['sample_nodes']

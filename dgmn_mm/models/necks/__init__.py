from .multi_level_resize import MultiLevelResize

__all__ = ['MultiLevelResize']

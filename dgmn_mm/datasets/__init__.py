"""Datasets: the synthetic demo data generator (:mod:`dgmn_mm.datasets.synthetic`)."""
from .synthetic import SHAPES, make_cityscapes, make_coco, make_demo_data, make_imagenet

__all__ = ['SHAPES', 'make_coco', 'make_cityscapes', 'make_imagenet', 'make_demo_data']

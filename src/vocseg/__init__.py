"""vocseg: PASCAL VOC 2012 semantic segmentation on MMSegmentation, from data to results."""

__version__ = "0.1.0"

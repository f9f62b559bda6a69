"""The stack: what makes mmseg 1.2.2 / mmengine 0.10.7 / mmcv-lite run on current torch, safe checkpoint loading, speed settings."""

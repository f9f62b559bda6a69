"""Run folders: their names and files, checkpoints in them, output-folder numbering, loss curves and a run's saved config.

Below `training`, `evaluation`, `inference`, `reports` and `export`, which all read or write run folders.
"""

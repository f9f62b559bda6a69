"""Data: get, convert, generate and check VOC 2012 + SBD trees (`vocseg prepare`). Imports no torch."""

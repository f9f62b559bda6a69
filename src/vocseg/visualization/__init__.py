"""Pictures of segmentations: palette colours, outlined overlays with legends, label PNGs."""

"""The recipe: the typed recipe and its arithmetic, model presets, pretrained and official weights, MMSeg config writing."""

"""Inference: a trained model (PyTorch or ONNX) on images, folders, globs and videos, at bounded memory."""

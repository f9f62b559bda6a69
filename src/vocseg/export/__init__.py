"""Export: a trained model as ONNX, checked in onnxruntime against vocseg's own predictions."""

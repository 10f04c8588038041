"""Engine stage: ONNX -> TensorRT 10.x/11.x or TensorRT-RTX engine, and the fusion-op plugins."""

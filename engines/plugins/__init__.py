"""CUDA plugins for ASANet's fusion ops (SFM, CFM, GRN) and their TensorRT registration."""

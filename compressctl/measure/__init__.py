"""Measurement of ONNX models: latency on ONNX Runtime providers, size, MACs, metrics."""

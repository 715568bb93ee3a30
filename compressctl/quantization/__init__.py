"""Quantization helpers beyond ONNX Runtime's post-training INT8.

* ``kmeans``: non-uniform weight clustering stored as packed indices + codebook.
* ``weight_only``: int4 MatMulNBits weights and fp16 conversion (ONNX Runtime tools).
* ``fallback``: accuracy-aware fallback — sensitive nodes go back to float.
* ``fake_quant``: fake-quantized modules for quantization-aware training.
"""

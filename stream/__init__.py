"""lrcn-stream runtime: frame sampling, ONNX inference and live caption sinks (no PyTorch)."""

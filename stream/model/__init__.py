"""The model at run time: the bundle format (one owner reads and writes it), ONNX Runtime
sessions and devices, key frames, and the captioning core (per-stream state, encode, decode)."""

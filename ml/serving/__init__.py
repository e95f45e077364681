"""The model service: the exported ONNX model behind the Open Inference Protocol (KServe v2).

`python -m ml.serving` starts it (configuration from environment variables, see README.md here).
The hot path is a raw ASGI application: the model answers in tens of microseconds, so every
microsecond the web layer spends per request is throughput; see ``app.py``.
"""

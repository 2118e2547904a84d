"""Models for ``model`` strategies: loading and running an ONNX file (``onnx_model.py``) and training the
example one from a simulated or recorded day (``train.py``). docs/ARCHITECTURE.md, "Model strategies"."""

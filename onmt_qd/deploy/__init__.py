"""Deployment paths of a trained model: a CTranslate2 model directory for
Transformers (ct2.py) and torch dynamic int8 quantization for OpenNMT-py's own
engine on the CPU (int8.py)."""

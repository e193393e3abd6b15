"""lungdx: a reproducible pipeline that recognises lung disease on chest X-rays."""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notes) buries our one-line messages.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

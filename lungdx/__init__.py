"""lungdx: a reproducible pipeline that recognises lung disease on chest X-rays."""

from __future__ import annotations

import os

# TensorFlow's C++ info lines after start-up (training prints tf.data's "Memory patch applied"
# without it); the start-up lines ignore this variable: lungdx.console.import_tensorflow hides those.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.2.0"

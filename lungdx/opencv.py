"""OpenCV as every lungdx module uses it: one code path on every x86-64 CPU.

OpenCV picks its SSE4, AVX2 or AVX-512 loops at run time, and Intel's IPP its own, by the
processor; a blur or a resize in float then rounds differently, so the same seed gave other
pixels on another CPU (docs/models.md#determinism). `setUseOptimized(False)` turns both off:
every CPU runs the SSE2/SSE3 baseline that x86-64 guarantees. It costs little here: our images
are small and the slow parts of the pipeline are TensorFlow's (benchmarks/prepare_speed.py).
Import cv2 from here, never directly, so no module runs OpenCV before this is set.
"""

import cv2

cv2.setUseOptimized(False)
cv2.setNumThreads(1)  # we parallelise across images ourselves (lungdx.workers)

"""OpenCV as every lungdx module uses it: one code path on every x86-64 CPU.

OpenCV picks its SSE4, AVX2 or AVX-512 loops at run time, and Intel's IPP its own, by the
processor; a blur or a resize in float then rounds differently, so the same seed gave other
pixels on another CPU (docs/models.md#determinism). `setUseOptimized(False)` turns both off:
every CPU runs the SSE3 baseline the wheel is built for (every x86-64 CPU since 2005 has it).
Measured here: a 299 -> 128 px INTER_AREA resize takes 0.18 ms instead of 0.14, a float blur
0.37 instead of 0.33, PNG decoding is unchanged; the prepare stage is about a second of the
default run. Import cv2 from here, never directly (a test checks it), so no module runs
OpenCV before this is set.
"""

from __future__ import annotations

import cv2

cv2.setUseOptimized(False)
cv2.setNumThreads(1)  # we parallelise across images ourselves (lungdx.workers)

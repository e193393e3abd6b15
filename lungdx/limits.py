"""What a prepared image and a model's input may be: shared by params.yaml's checks
(lungdx.params), the images (lungdx.images) and the model file (lungdx.model_file), and light
to import (a stage reads its params before it needs OpenCV or TensorFlow)."""

from __future__ import annotations

MIN_IMAGE_SIZE = 16  # pixels per side of a prepared image, at least
MAX_IMAGE_SIZE = 1024  # pixels per side of a generated or prepared image, at most
# prepare.lung_mask: none (the whole X-ray), crop (cut to the lungs' box), mask (crop, and black
# beyond the lungs); lungdx.images.prepare_image does each.
LUNG_MASK_POLICIES = ("none", "crop", "mask")

"""Draw docs/synthetic_examples.png: generated X-rays per class with their lesion masks in red.

python -m docs.make_synthetic_examples
"""

from pathlib import Path

import cv2
import numpy as np

from lungdx.synthetic import CLASSES, generate_image

COLUMNS, SIZE, SEED = 4, 120, 239


def tile(cls: str, index: int) -> np.ndarray:
    img, lung, lesion = generate_image(SEED, cls, index, SIZE)
    rgb = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    outline = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    contours, _ = cv2.findContours(lung, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(outline, contours, -1, (255, 200, 0), 1)  # lung mask outline in blue
    outline[lesion > 0] = (0.5 * outline[lesion > 0] + (0, 0, 127)).astype(np.uint8)  # lesion in red
    return np.concatenate([rgb, outline], axis=0)


def main() -> None:
    rows = []
    for cls in CLASSES:
        label = np.full((24, SIZE * COLUMNS, 3), 255, np.uint8)
        cv2.putText(label, cls, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        rows += [label, np.concatenate([tile(cls, i) for i in range(COLUMNS)], axis=1)]
    out = Path(__file__).with_name("synthetic_examples.png")
    cv2.imwrite(str(out), np.concatenate(rows, axis=0), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

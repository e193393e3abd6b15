"""Stage segment: a lung mask for every sampled image -> data/segmented, metrics/segment.json,
reports/segment.json, reports/segment_images (lungdx.segment)."""

import time

from lungdx import params
from lungdx.console import progress
from lungdx.readable import score
from lungdx.runner import stage
from lungdx.segment import segment


@stage
def main():
    """Learn the lungs (under prepare.lung_mask crop or mask) and draw the ones the dataset lacks."""
    start = time.perf_counter()
    meta = segment(
        params.load().segment,
        "data/sampled/manifest.csv",
        "data/raw",
        "data/segmented",
        "metrics/segment.json",
        "reports/segment.json",
        "reports/segment_images",
        progress=progress,
    )
    seconds = time.perf_counter() - start
    counts = meta["counts"]
    if meta["segmenter"] is None:
        print(
            f"segment: prepare.lung_mask is none, nothing to learn: {counts['dataset']} dataset masks listed "
            f"in {seconds:.1f} s -> data/segmented"
        )
        return
    print(
        f"segment: test Dice {score(meta['segmenter']['test_dice'])} "
        f"(learned from {meta['segmenter']['learned_from']}); "
        f"masks: {counts['dataset']} dataset, {counts['segmenter']} drawn, {counts['whole']} implausible (used "
        f"whole) in {seconds:.0f} s -> data/segmented"
    )


if __name__ == "__main__":
    main()

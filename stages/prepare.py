"""Stage prepare: the sampled images -> data/prepared/<split>/*.npy, meta.json (lungdx.prepare)."""

import time

from lungdx import params
from lungdx.console import progress
from lungdx.prepare import prepare
from lungdx.runner import stage


@stage
def main():
    """Resize every sampled image into the arrays of data/prepared."""
    start = time.perf_counter()
    meta = prepare(
        params.load().prepare,
        "data/sampled/manifest.csv",
        "data/raw",
        "data/segmented",
        "data/prepared",
        progress=progress,
    )
    n = sum(sum(c.values()) for c in meta["counts"].values())
    seconds = time.perf_counter() - start
    focus = "" if meta["lung_mask"] == "none" else f", lung_mask {meta['lung_mask']}"
    print(
        f"prepare: {n} images at {meta['image_size']}x{meta['image_size']}{focus} in {seconds:.1f} s "
        f"({n / seconds:.0f} images/s) -> data/prepared"
    )


if __name__ == "__main__":
    main()

"""Stage sample: data/raw -> data/sampled/manifest.csv, skipped.csv (lungdx.sample)."""

from lungdx import params
from lungdx.console import progress
from lungdx.runner import stage
from lungdx.sample import sample


@stage
def main():
    """Choose and split the images of data/raw into data/sampled."""
    manifest = sample(params.load().sample, "data/raw", "data/sampled", progress=progress)
    counts = manifest.groupby(["class", "split"]).size().unstack(fill_value=0)
    print(f"sample: {len(manifest)} images -> data/sampled/manifest.csv\n{counts.to_string()}")


if __name__ == "__main__":
    main()

"""Stage sample: data/raw -> data/sampled/manifest.csv (see lungdx.sample)."""

from lungdx import params
from lungdx.console import progress
from lungdx.runner import stage
from lungdx.sample import sample


@stage
def main():
    settings = params.sample_settings(params.load())
    manifest = sample("data/raw", "data/sampled", settings, progress=progress)
    counts = manifest.groupby(["class", "split"]).size().unstack(fill_value=0)
    print(f"sample: {len(manifest)} images -> data/sampled/manifest.csv\n{counts.to_string()}")


if __name__ == "__main__":
    main()

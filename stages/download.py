"""Stage download: dataset.source -> data/raw (lungdx.download)."""

from lungdx import params
from lungdx.console import progress
from lungdx.download import download
from lungdx.runner import stage


@stage
def main():
    """Bring params.yaml's dataset.source into data/raw."""
    record = download(params.load().download, "data/raw", progress=progress)
    origin = record["kind"] if record["kind"] == "synthetic" else f"{record['kind']} {record['location']}"
    print(f"download: {record['files']} files of {len(record['classes'])} classes from {origin} -> data/raw")


if __name__ == "__main__":
    main()

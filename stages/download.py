"""Stage download: dataset.source -> data/raw (see lungdx.data)."""

from lungdx import params
from lungdx.console import progress
from lungdx.runner import stage
from lungdx.data import download


@stage
def main():
    record = download(params.load(), "data/raw", progress=progress)
    origin = record["kind"] if record["kind"] == "synthetic" else f"{record['kind']} {record['location']}"
    print(f"download: {record['files']} files of {len(record['classes'])} classes from {origin} -> data/raw")


if __name__ == "__main__":
    main()

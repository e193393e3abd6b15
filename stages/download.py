"""Stage download: dataset.source -> data/raw (see lungdx.data)."""

from lungdx import params
from lungdx.runner import progress, stage
from lungdx.data import download


@stage
def main():
    record = download(params.load(), "data/raw", progress=progress)
    print(f"download: {record['files']} files of {len(record['classes'])} classes from {record['kind']} "
          f"{record['location']} -> data/raw")


if __name__ == "__main__":
    main()

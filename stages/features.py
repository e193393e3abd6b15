"""Stage features: VGG19 base features of every prepared image, computed once (see lungdx.features)."""

from lungdx import params
from lungdx.cli import stage
from lungdx.features import extract


@stage
def main():
    info = extract(params.load())
    print(f"features: {info}")


if __name__ == "__main__":
    main()

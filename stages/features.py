"""Stage features: VGG19 base features of every prepared image, computed once (see lungdx.features)."""

from lungdx import params
from lungdx.runner import stage
from lungdx.features import extract


@stage
def main():
    info = extract(params.load())
    if info["model"] == "vgg19":
        print(f"features: VGG19 base (weights {info['weights']}) once over every {info['image_size']}px image, "
              f"{info['dim']} per image -> data/features")
    else:
        print(f"features: nothing to cache for model {info['model']}")


if __name__ == "__main__":
    main()

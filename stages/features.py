"""Stage features: VGG19 base features of every prepared image, computed once -> data/features
(lungdx.features)."""

from lungdx import params
from lungdx.features import features
from lungdx.runner import stage


@stage
def main():
    """Cache the frozen VGG19 base's features of data/prepared (nothing for the cnn)."""
    info = features(params.load().features, "data/prepared", "data/features")
    if info["model"] == "vgg19":
        print(
            f"features: VGG19 base (weights {info['weights']}) once over every {info['image_size']}px image, "
            f"{info['dim']} per image -> data/features"
        )
    else:
        print(f"features: nothing to cache for model {info['model']}")


if __name__ == "__main__":
    main()

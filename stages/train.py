"""Stage train: the chosen architecture -> models/model.keras (with its class names), dvclive/train
(lungdx.train)."""

from lungdx import params
from lungdx.readable import score
from lungdx.runner import stage
from lungdx.train import train


@stage
def main():
    """Train the chosen model on data/prepared and save it to models/model.keras."""
    summary = train(
        params.load().train,
        prepared_dir="data/prepared",
        features_dir="data/features",
        model_path="models/model.keras",
        live_dir="dvclive/train",
        segmented_dir="data/segmented",
    )
    print(
        f"train: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
        f"val accuracy {score(summary['best_val_accuracy'])} -> models/model.keras"
    )


if __name__ == "__main__":
    main()

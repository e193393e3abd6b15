"""Stage train: the chosen architecture -> models/model.keras (with its class names), dvclive/train."""

from lungdx import params
from lungdx.runner import stage
from lungdx.train import train


@stage
def main():
    summary = train(params.load())
    print(f"train: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
          f"val accuracy {summary['best_val_accuracy']:.3f} -> models/model.keras")


if __name__ == "__main__":
    main()

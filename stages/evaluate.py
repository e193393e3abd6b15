"""Stage evaluate: the model on the test split -> metrics/eval.json, reports/eval.json, metrics/plots/
(lungdx.evaluate)."""

from lungdx import params
from lungdx.evaluate import evaluate
from lungdx.runner import stage


@stage
def main():
    """Score models/model.keras on the test split, with intervals and plots."""
    result = evaluate(
        params.load().evaluate,
        model_path="models/model.keras",
        prepared_dir="data/prepared",
        manifest="data/sampled/manifest.csv",
        features_dir="data/features",
        metrics_path="metrics/eval.json",
        details_path="reports/eval.json",
        plots_dir="metrics/plots",
    )
    print(
        f"evaluate: {result['model']} test accuracy {result['accuracy']:.3f} "
        f"(95% {result['accuracy_ci']['lower']:.3f}-{result['accuracy_ci']['upper']:.3f}), "
        f"f1_macro {result['f1_macro']:.3f}, roc_auc_ovr {result['roc_auc_ovr']}, ece {result['ece']:.3f} "
        f"on {result['n_test']} images"
    )


if __name__ == "__main__":
    main()

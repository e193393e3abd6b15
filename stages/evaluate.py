"""Stage evaluate: the model on the test split -> metrics/eval.json, reports/eval.json, metrics/plots/
(lungdx.evaluate)."""

from lungdx import params
from lungdx.evaluate import evaluate
from lungdx.readable import score, score_with_interval
from lungdx.runner import stage


@stage
def main() -> None:
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
        f"evaluate: {result['model']} test accuracy {score_with_interval(result['accuracy'], result['accuracy_ci'])}, "
        f"f1_macro {score(result['f1_macro'])}, roc_auc_ovr {score(result['roc_auc_ovr'])}, "
        f"ece {score(result['ece'])} on {result['n_test']} images"
    )


if __name__ == "__main__":
    main()

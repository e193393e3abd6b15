"""Stage baseline: data/prepared, data/sampled -> metrics/baseline.json, reports/baseline.json,
reports/baseline_predictions.csv (lungdx.baseline)."""

from lungdx import params
from lungdx.baseline import baseline
from lungdx.readable import score
from lungdx.runner import stage


@stage
def main():
    """Fit the random forest and naive Bayes baselines and score them on the test split."""
    result = baseline(
        params.load().baseline,
        "data/prepared",
        "data/sampled/manifest.csv",
        "metrics/baseline.json",
        "reports/baseline.json",
        "reports/baseline_predictions.csv",
    )
    print("baseline: " + ", ".join(f"{k} accuracy {score(v['accuracy'])}" for k, v in result.items()))


if __name__ == "__main__":
    main()

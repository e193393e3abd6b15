"""Stage baseline: data/prepared -> metrics/baseline.json, reports/baseline.json (see lungdx.baseline)."""

from lungdx import params
from lungdx.baseline import run_baseline
from lungdx.runner import stage


@stage
def main():
    result = run_baseline(params.load())
    print("baseline: " + ", ".join(f"{k} accuracy {v['accuracy']:.3f}" for k, v in result.items()))


if __name__ == "__main__":
    main()

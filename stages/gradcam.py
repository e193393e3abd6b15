"""Stage gradcam: reports/gradcam/ (index.html, scores.json), reports/gradcam_images/ (image plots) and
metrics/gradcam.json (see lungdx.report)."""

from lungdx import params
from lungdx.runner import stage
from lungdx.report import build_report


@stage
def main():
    scores = build_report(params.load())
    print(f"gradcam: layer {scores['layer']} -> reports/gradcam/index.html, reports/gradcam_images/, "
          "metrics/gradcam.json")


if __name__ == "__main__":
    main()

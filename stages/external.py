"""Stage external@<name>: the trained model on the dataset params.yaml's external.<name> names ->
metrics/external/<name>.json, reports/external/<name>.json (see lungdx.external)."""

import sys

from lungdx import params
from lungdx.console import progress
from lungdx.errors import LungdxError
from lungdx.external import evaluate_external
from lungdx.runner import stage


@stage
def main():
    settings = params.load()
    sources = params.external_settings(settings)
    name = sys.argv[1] if len(sys.argv) == 2 else None
    if name not in sources:
        raise LungdxError(f"usage: python -m stages.external NAME, NAME one of params.yaml's external: "
                          f"{', '.join(sources) or '(none)'}")
    found = evaluate_external("models/model.keras", sources[name], f"metrics/external/{name}.json",
                              f"reports/external/{name}.json", seed=params.seed(settings),
                              layer=params.gradcam_settings(settings)["layer"], progress=progress)
    lungs = (f", lung energy {found['lung_energy_share']:.3f} (lungs' area {found['lung_energy_chance']:.3f})"
             if "lung_energy_share" in found else "")
    print(f"external {name}: {found['n_images']} images, accuracy {found['accuracy']:.3f}{lungs} "
          f"-> metrics/external/{name}.json")


if __name__ == "__main__":
    main()

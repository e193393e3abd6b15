"""dvc.yaml's code deps: every module a stage can run is listed, so no stale result looks up to date."""

import shutil
import textwrap

import pytest

from lungdx import stage_deps
from tests.conftest import ROOT

STAGES = ["download", "sample", "prepare", "baseline", "features", "train", "evaluate", "gradcam"]


def test_dvc_yaml_lists_every_module_each_stage_runs_and_no_other():
    wrong = stage_deps.differences(ROOT)
    assert wrong == {}, f"dvc.yaml's code deps are out of date ({wrong}); fix: python -m lungdx.stage_deps --write"
    assert list(stage_deps.declared_code_deps(ROOT)) == STAGES


def test_the_graph_follows_imports_inside_functions_and_stays_per_stage():
    reach = {name: stage_deps.reachable_files(ROOT, ROOT / "stages" / f"{name}.py") for name in STAGES}
    # train imports lungdx.features inside a function; evaluate does too (cached VGG19 features).
    assert "lungdx/features.py" in reach["train"] and "lungdx/features.py" in reach["evaluate"]
    # download decides which files to copy with images.IMAGE_SUFFIXES.
    assert "lungdx/images.py" in reach["download"]
    # Python runs the package's __init__ before any of its modules.
    assert all({"lungdx/__init__.py", "stages/__init__.py", "lungdx/runner.py"} <= r for r in reach.values())
    # Per stage, not the whole package: the data stages never run model or Grad-CAM code.
    for data_stage in ("download", "sample", "prepare"):
        assert not {"lungdx/models.py", "lungdx/gradcam.py", "lungdx/report.py"} & reach[data_stage]
    assert "lungdx/report.py" not in reach["evaluate"] and "lungdx/train.py" not in reach["gradcam"]


def write_tree(root, files):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root


def test_every_import_form_is_followed_and_a_dynamic_import_is_refused(tmp_path):
    root = write_tree(tmp_path, {
        "stages/__init__.py": "",
        "stages/s.py": "from lungdx.a import run\nimport numpy\n",
        "lungdx/__init__.py": "",
        "lungdx/a.py": "def run():\n    from .b import x\n    return x\n",
        "lungdx/b.py": "from . import c\nimport lungdx.sub.d\nx = 1\n",
        "lungdx/c.py": "",
        "lungdx/sub/__init__.py": "",
        "lungdx/sub/d.py": "from ..c import *\n",
        "lungdx/unused.py": "",
    })
    assert stage_deps.reachable_files(root, root / "stages" / "s.py") == {
        "stages/__init__.py", "stages/s.py", "lungdx/__init__.py", "lungdx/a.py", "lungdx/b.py", "lungdx/c.py",
        "lungdx/sub/__init__.py", "lungdx/sub/d.py"}
    (root / "lungdx" / "c.py").write_text("import importlib\nm = importlib.import_module('lungdx.unused')\n")
    with pytest.raises(ValueError, match=r"lungdx/c.py:2: a dynamic import"):
        stage_deps.reachable_files(root, root / "stages" / "s.py")


def project_copy(tmp_path):
    for name in ("dvc.yaml", "stages", "lungdx"):
        src = ROOT / name
        shutil.copytree(src, tmp_path / name) if src.is_dir() else shutil.copy(src, tmp_path / name)
    return tmp_path


def test_a_module_missing_from_dvc_yaml_fails_the_check_and_write_puts_it_back(tmp_path, capsys):
    project = project_copy(tmp_path)
    original = (project / "dvc.yaml").read_text()
    train_block = original.split("  train:\n", 1)[1].split("\n\n", 1)[0]
    assert "      - lungdx/features.py\n" in train_block
    (project / "dvc.yaml").write_text(original.replace(
        "  train:\n" + train_block, "  train:\n" + train_block.replace("      - lungdx/features.py\n", "")))

    assert stage_deps.differences(project) == {"train": {"missing": ["lungdx/features.py"], "extra": []}}
    assert stage_deps.main(["--root", str(project)]) == 1
    assert "dvc.yaml: stage train runs lungdx/features.py but does not list it in deps" in capsys.readouterr().out

    assert stage_deps.main(["--root", str(project), "--write"]) == 0
    assert (project / "dvc.yaml").read_text() == original, "only the missing line came back; nothing else moved"

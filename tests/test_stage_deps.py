"""dvc.yaml's code deps: every module a stage can run is listed, so no stale result looks up to date."""

import ast
import re
import shutil
import textwrap

import pytest
import yaml

from lungdx import stage_deps
from tests.helpers import ROOT

STAGES = [
    "download",
    "sample",
    "segment",
    "prepare",
    "baseline",
    "features",
    "train",
    "evaluate",
    "gradcam",
    "external",
]


def test_dvc_yaml_lists_every_module_each_stage_runs_and_no_other():
    wrong = stage_deps.differences(ROOT)
    assert wrong == {}, f"dvc.yaml's code deps are out of date ({wrong}); fix: python -m lungdx.stage_deps --write"
    assert list(stage_deps.declared_code_deps(ROOT)) == STAGES


def test_dvc_lock_records_the_code_on_main():
    """dvc.lock is how a reader checks a result: it must describe these very files."""
    stale = stage_deps.stale_lock(ROOT)
    assert stale == [], (
        "dvc.lock describes other code than main's; regenerate it from a full default run in a "
        "fresh clone (docs/development.md#dvclock):\n" + "\n".join(stale[:20])
    )


def write_fresh_lock(project) -> None:
    """A dvc.lock as DVC 3 writes it for the code in `project`: each stage's code deps with the md5
    of their bytes, and the seed it was run with."""
    import hashlib

    seed = yaml.safe_load((project / "params.yaml").read_text())["seed"]
    stages = {
        name: {
            "cmd": f"python -m stages.{name}",
            "deps": [
                {"path": path, "hash": "md5", "md5": hashlib.md5((project / path).read_bytes()).hexdigest()}
                for path in sorted(paths)
            ],
            "params": {"params.yaml": {"seed": seed}},
        }
        for name, paths in stage_deps.declared_code_deps(project).items()
        if name != "external"
    }
    (project / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": stages}, sort_keys=False))


def test_a_stale_dvc_lock_is_named_line_by_line(tmp_path, capsys):
    project = project_copy(tmp_path)
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    write_fresh_lock(project)
    assert stage_deps.stale_lock(project) == []
    (project / "lungdx" / "sample.py").write_text((project / "lungdx" / "sample.py").read_text() + "# edited\n")
    lock = (project / "dvc.lock").read_text()
    (project / "dvc.lock").write_text(lock.replace("path: lungdx/splits.py", "path: lungdx/gone.py"))
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("seed: 239", "seed: 7"))
    stale = stage_deps.stale_lock(project)
    assert "dvc.lock: stage sample records another lungdx/sample.py than the one here" in stale
    assert "dvc.lock: stage sample records lungdx/gone.py, which does not exist" in stale
    assert "dvc.lock: stage sample does not record lungdx/splits.py, which dvc.yaml lists" in stale
    assert "dvc.lock: stage train records params.yaml's seed = 239, not 7 as now" in stale
    assert stage_deps.main(["--root", str(project), "--lock"]) == 1
    assert "records another lungdx/sample.py" in capsys.readouterr().out
    assert stage_deps.main(["--root", str(project)]) == 0  # without --lock, dvc.yaml alone
    # A stage dvc.yaml has and the lock lacks (a new stage, never run) is named too.
    (project / "dvc.lock").write_text(lock.replace("  gradcam:", "  gradcam_old:"))
    assert "dvc.lock: stage gradcam of dvc.yaml is not recorded" in stage_deps.stale_lock(project)


def test_the_graph_follows_imports_inside_functions_and_stays_per_stage():
    reach = {name: stage_deps.reachable_files(ROOT, ROOT / "stages" / f"{name}.py") for name in STAGES}
    # train imports lungdx.feature_cache inside a function; evaluate does too (cached VGG19 features).
    assert "lungdx/feature_cache.py" in reach["train"] and "lungdx/feature_cache.py" in reach["evaluate"]
    # download decides which files to copy with images.IMAGE_SUFFIXES.
    assert "lungdx/images.py" in reach["download"]
    # Python runs the package's __init__ before any of its modules.
    assert all({"lungdx/__init__.py", "stages/__init__.py", "lungdx/runner.py"} <= r for r in reach.values())
    # Per stage, not the whole package: the data stages never run model or Grad-CAM code.
    for data_stage in ("download", "sample", "prepare"):
        assert not {"lungdx/models.py", "lungdx/heatmaps.py", "lungdx/gradcam.py"} & reach[data_stage]
    assert "lungdx/gradcam.py" not in reach["evaluate"] and "lungdx/train.py" not in reach["gradcam"]


def test_a_stage_runs_no_other_stage_s_module():
    """A stage's name finds its module (lungdx/<stage>.py), and what two stages share lives in a
    shared module: no stage runs another stage's code."""
    modules = {name: f"lungdx/{name}.py" for name in STAGES}
    assert all((ROOT / path).is_file() for path in modules.values()), modules
    for name in STAGES:
        reach = stage_deps.reachable_files(ROOT, ROOT / "stages" / f"{name}.py")
        assert modules[name] in reach, name
        assert not (reach & (set(modules.values()) - {modules[name]})), (name, reach & set(modules.values()))


def write_tree(root, files):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root


def test_every_import_form_is_followed_and_a_dynamic_import_is_refused(tmp_path):
    root = write_tree(
        tmp_path,
        {
            "stages/__init__.py": "",
            "stages/s.py": "from lungdx.a import run\nimport numpy\n",
            "lungdx/__init__.py": "",
            "lungdx/a.py": "def run():\n    from .b import x\n    return x\n",
            "lungdx/b.py": "from . import c\nimport lungdx.sub.d\nx = 1\n",
            "lungdx/c.py": "",
            "lungdx/sub/__init__.py": "",
            "lungdx/sub/d.py": "from ..c import *\nfrom typing import TYPE_CHECKING\nimport typing\n"
            "if TYPE_CHECKING:\n    from lungdx import unused\nelse:\n    from lungdx import other\n"
            "if typing.TYPE_CHECKING:\n    import lungdx.unused\n",
            "lungdx/unused.py": "",  # imported for annotations only: never run
            "lungdx/other.py": "",
        },
    )
    assert stage_deps.reachable_files(root, root / "stages" / "s.py") == {
        "stages/__init__.py",
        "stages/s.py",
        "lungdx/__init__.py",
        "lungdx/a.py",
        "lungdx/b.py",
        "lungdx/c.py",
        "lungdx/sub/__init__.py",
        "lungdx/sub/d.py",
        "lungdx/other.py",
    }
    for dynamic in (
        "import importlib\nm = importlib.import_module('lungdx.unused')\n",
        "from importlib import import_module as im\nm = im('lungdx.unused')\n",
        "import runpy\nrunpy.run_module('lungdx.unused')\n",
    ):
        (root / "lungdx" / "c.py").write_text(dynamic)
        with pytest.raises(stage_deps.StageDepsError, match=r"lungdx/c.py:\d: a dynamic import"):
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
    assert "      - lungdx/feature_cache.py\n" in train_block
    (project / "dvc.yaml").write_text(
        original.replace(
            "  train:\n" + train_block, "  train:\n" + train_block.replace("      - lungdx/feature_cache.py\n", "")
        )
    )

    assert stage_deps.differences(project) == {"train": {"missing": ["lungdx/feature_cache.py"], "extra": []}}
    assert stage_deps.main(["--root", str(project)]) == 1
    assert "dvc.yaml: stage train runs lungdx/feature_cache.py but does not list it in deps" in capsys.readouterr().out

    assert stage_deps.main(["--root", str(project), "--write"]) == 0
    assert (project / "dvc.yaml").read_text() == original, "only the missing line came back; nothing else moved"


def test_a_foreach_stage_is_followed_through_its_do_block(tmp_path, capsys):
    """external: one stage per params entry (foreach), its cmd and deps under `do:`."""
    project = project_copy(tmp_path)
    original = (project / "dvc.yaml").read_text()
    assert "        - lungdx/external.py\n" in original
    (project / "dvc.yaml").write_text(original.replace("        - lungdx/external.py\n", ""))
    assert stage_deps.differences(project) == {"external": {"missing": ["lungdx/external.py"], "extra": []}}
    assert stage_deps.main(["--root", str(project), "--write"]) == 0
    assert (project / "dvc.yaml").read_text() == original


def train_block(text):
    return text.split("  train:\n", 1)[1].split("\n\n", 1)[0]


# Hand-edited dvc.yaml shapes: --write fixes the code deps and keeps everything else as it was.
LAYOUTS = {
    "comment_inside_deps": lambda text: text.replace("      - lungdx/train.py\n", "      # the code\n", 1),
    "quoted_entry": lambda text: text.replace("      - lungdx/train.py\n", '      - "lungdx/train.py"\n', 1),
    "another_script_dep": lambda text: text.replace(
        "      - data/prepared\n      - data/features\n",
        "      - data/prepared\n      - data/features\n      - tools/make_report.py\n",
        1,
    ),
    "inline_comment_on_key": lambda text: text.replace(
        "  train:\n    cmd: python -m stages.train\n    deps:\n",
        "  train:\n    cmd: python -m stages.train\n    deps:  # generated\n",
        1,
    ),
    "four_space_indent": lambda text: "\n".join(
        " " * (2 * (len(line) - len(line.lstrip()))) + line.lstrip() if line.strip() else line
        for line in text.split("\n")
    ),
    "crlf": lambda text: text.replace("\n", "\r\n"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_write_fixes_a_hand_edited_dvc_yaml_and_keeps_the_rest(tmp_path, layout):
    project = project_copy(tmp_path)
    good = (project / "dvc.yaml").read_text()
    # segment is the first stage that runs lungdx/model_file.py: drop that line there.
    broken = re.sub(r"[ ]*- lungdx/model_file\.py\r?\n", "", LAYOUTS[layout](good), count=1)
    (project / "dvc.yaml").write_bytes(broken.encode())
    assert "segment" in stage_deps.differences(project)
    assert stage_deps.main(["--root", str(project), "--write"]) == 0
    fixed = (project / "dvc.yaml").read_bytes().decode()
    assert stage_deps.differences(project) == {}
    parsed = yaml.safe_load(fixed)["stages"]["train"]["deps"]
    assert len(parsed) == len(set(parsed)), "no line twice"
    if layout == "another_script_dep":
        assert "tools/make_report.py" in parsed, "a dep outside lungdx/ and stages/ is not ours to remove"
    if layout == "crlf":
        assert fixed.count("\r\n") == fixed.count("\n"), "one line-ending style"
    if layout in ("comment_inside_deps", "inline_comment_on_key"):
        assert ("# the code" in fixed) or ("# generated" in fixed)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda text: text.replace("  train:\n    cmd: python -m stages.train\n", "  train:\n    cmd: make train\n"),
            "stage train runs 'make train', not a Python module of this project",
        ),
        (
            lambda text: text.replace("\nartifacts:", "  export:\n    cmd: python -m stages.train\n\nartifacts:"),
            "could not rewrite the deps of stage export safely",
        ),
    ],
)
def test_a_stage_the_tool_cannot_follow_is_one_error_line(tmp_path, capsys, change, message):
    project = project_copy(tmp_path)
    before = change((project / "dvc.yaml").read_text())
    assert before != (ROOT / "dvc.yaml").read_text()
    (project / "dvc.yaml").write_text(before)
    assert stage_deps.main(["--root", str(project), "--write"]) == 2
    assert f"error: dvc.yaml: {message}" in capsys.readouterr().err
    assert (project / "dvc.yaml").read_text() == before, "nothing written"


def test_each_stage_module_has_its_stage_function_taking_settings_and_explicit_paths():
    """lungdx/<stage>.py defines <stage>(settings, ...): its settings first, and no default that
    names an output (a default path would hide where a stage writes from dvc.yaml's reader)."""
    for name in STAGES:
        tree = ast.parse((ROOT / "lungdx" / f"{name}.py").read_text())
        functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"lungdx/{name}.py has no function {name}()"
        args = functions[name].args
        assert [a.arg for a in args.args][:1] == ["settings"], name
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                    assert not (
                        isinstance(default, ast.Constant)
                        and isinstance(default.value, str)
                        and default.value.split("/")[0] in ("data", "models", "metrics", "reports", "dvclive")
                    ), f"lungdx/{name}.py: {node.name}() has a default path {default.value!r}"


@pytest.mark.parametrize(
    "lock, says",
    [
        ("stages: {download: 5}", "dvc.lock: stage download is not in the shape DVC writes"),
        ("stages: {download: {deps: [{path: 5}]}}", "dvc.lock: stage download is not in the shape DVC writes"),
        ("stages: {download: {params: 3}}", "dvc.lock: stage download is not in the shape DVC writes"),
        ("stages: null", "dvc.lock: no stages; regenerate it with dvc repro"),
        ("[1, 2", "dvc.lock: not readable (while parsing a flow sequence)"),
        (b"\xff\xfe\n", "dvc.lock: not readable ('utf-8' codec can't decode"),
    ],
)
def test_a_damaged_dvc_lock_is_one_error_line(tmp_path, capsys, lock, says):
    project = project_copy(tmp_path)
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    (project / "dvc.lock").write_bytes(lock if isinstance(lock, bytes) else lock.encode())
    assert stage_deps.main(["--root", str(project), "--lock"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and says in line, line

"""params.yaml is a public interface: every key is documented, and bad values are named."""

import ast
import copy
import dataclasses
import re

import pytest
import yaml

from lungdx import params as P
from lungdx.errors import LungdxError, ParamError
from lungdx.stage_deps import runtime_nodes
from tests.helpers import ROOT, settings


def leaves(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, path + ".")
        else:
            yield path


def uncommented_settings(text: str) -> list[str]:
    """Settings (keys whose value is not a group) with no comment at the end of their line
    and none on the line right above them."""
    lines = text.splitlines()

    def settings(node, prefix=""):
        for key, value in node.value:
            if isinstance(value, yaml.MappingNode) and value.value:
                yield from settings(value, f"{prefix}{key.value}.")
            else:
                yield f"{prefix}{key.value}", key, value

    def commented(key, value) -> bool:
        # A value on the key's line ends where its comment may start; a block value starts below.
        end = value.end_mark if value.end_mark.line == key.start_mark.line else key.end_mark
        after = lines[end.line][end.column :].lstrip(" :")
        above = lines[key.start_mark.line - 1].strip() if key.start_mark.line else ""
        return after.startswith("#") or above.startswith("#")

    return [path for path, key, value in settings(yaml.compose(text)) if not commented(key, value)]


def test_every_param_is_explained_by_a_comment_in_params_yaml():
    # params.yaml's comments are the parameter reference (docs/parameters.md says how params work).
    assert uncommented_settings("a: 1\n# the b\nb: 2\ng:\n  c: [1, 2]  # the c\n  d: '#'\n") == ["a", "g.d"]
    text = (ROOT / "params.yaml").read_text()
    assert len(list(leaves(yaml.safe_load(text)))) > 20
    missing = uncommented_settings(text)
    assert not missing, f"params.yaml: give each of these a short comment saying what it sets: {missing}"


def test_missing_key_and_bad_types_are_named():
    with pytest.raises(ParamError, match="sample.per_class.*missing"):
        P.integer({"sample": {}}, "sample.per_class")
    with pytest.raises(ParamError, match=r"sample.per_class = 'many'"):
        P.integer({"sample": {"per_class": "many"}}, "sample.per_class", minimum=1)
    with pytest.raises(ParamError, match="one of cnn, vgg19"):
        P.choice({"model": "resnet"}, "model", ("cnn", "vgg19"))


def test_unreadable_params_file_is_a_clear_error(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: [unclosed\n")
    with pytest.raises(LungdxError, match="not valid YAML"):
        P.load(tmp_path / "params.yaml")


def default_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_value(params: dict, key: str, value) -> dict:
    node = params
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return params


def load_with(tmp_path, **changes):
    """params.yaml with `changes` written as YAML (so nan is `.nan`) and read back by load, as a stage does."""
    params = default_params()
    for key, value in changes.items():
        with_value(params, key.replace("__", "."), value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return P.load(path)


NAN, INF = float("nan"), float("inf")

# (key, a value that must be refused, what the message must say is allowed); every key of params.yaml.
BAD_VALUES = [
    ("seed", -1, "an integer from 0 to 4294967295"),
    ("seed", 2**32, "an integer from 0 to 4294967295"),
    ("seed", 1.5, "an integer from 0"),
    ("seed", True, "an integer from 0"),
    ("dataset.source", 5, "synthetic, kaggle, a local folder"),
    ("dataset.source", "", "synthetic, kaggle, a local folder"),
    ("dataset.kaggle_handle", "covid19-radiography-database", "owner/dataset"),
    ("dataset.kaggle_handle", "a/b/c", "owner/dataset"),
    ("dataset.kaggle_version", 0, r"an integer >= 1, or null"),
    ("dataset.kaggle_version", "latest", r"an integer >= 1, or null"),
    ("dataset.kaggle_version", INF, r"an integer >= 1, or null"),
    ("dataset.classes", "COVID", "a list of class folder names"),
    ("dataset.classes", None, r"a list of class folder names, .* or \[\] for all"),
    ("dataset.classes", ["COVID", "COVID"], "without repeated names"),
    ("dataset.classes", ["../COVID"], "no slashes"),
    ("dataset.synthetic.per_class", 0, "an integer from 1 to 100000"),
    ("dataset.synthetic.per_class", 10**6, "an integer from 1 to 100000"),
    ("dataset.synthetic.image_size", 16, "an integer from 32 to 1024"),
    ("dataset.synthetic.image_size", 2048, "an integer from 32 to 1024"),
    ("dataset.synthetic.image_size", INF, "an integer from 32 to 1024"),
    ("sample.per_class", 0, "an integer >= 1"),
    ("sample.per_class", 2.5, "an integer >= 1"),
    ("sample.val_size", 0, "strictly between 0 and 1"),
    ("sample.val_size", NAN, "strictly between 0 and 1"),
    ("sample.test_size", INF, "strictly between 0 and 1"),
    ("prepare.image_size", 8, "an integer from 16 to 1024"),
    ("prepare.image_size", 2048, "an integer from 16 to 1024"),
    ("prepare.image_size", NAN, "an integer from 16 to 1024"),
    ("baseline.image_size", 2, "an integer from 4 to 1024"),
    ("baseline.image_size", 256, r"an integer from 4 to prepare.image_size \(now 128\)"),
    ("baseline.n_estimators", 0, "an integer from 1 to 10000"),
    ("baseline.n_estimators", 10**6, "an integer from 1 to 10000"),
    ("gradcam.per_class", 0, "an integer >= 1"),
    ("gradcam.layer", 5, "null .* or a conv layer's name"),
    ("gradcam.layer", "conv6", "a conv layer of the cnn model: conv1, conv2, conv3, conv4, conv5; did you mean"),
    ("gradcam.layer", "block5_conv4", "a conv layer of the cnn model: conv1"),
    ("model", "resnet", "one of cnn, vgg19"),
    ("models.cnn.epochs", 0, "an integer from 1 to 10000"),
    ("models.cnn.epochs", 10**6, "an integer from 1 to 10000"),
    ("models.cnn.batch_size", 0, "an integer from 1 to 4096"),
    ("models.cnn.batch_size", 10**5, "an integer from 1 to 4096"),
    ("models.cnn.learning_rate", 0, "a finite number > 0"),
    ("models.cnn.learning_rate", INF, "a finite number > 0"),
    ("models.cnn.learning_rate", NAN, "a finite number > 0"),
    ("models.cnn.learning_rate", "fast", "a finite number > 0"),
    ("models.cnn.dropout", 1, "from 0 up to"),
    ("models.cnn.dropout", NAN, "from 0 up to"),
    ("models.cnn.patience", 0, "an integer from 1 to 10000"),
    ("models.cnn.warmup_epochs", -1, "an integer from 0 to 10000"),
    ("models.cnn.dense_units", 0, "an integer from 1 to 8192"),
    ("models.cnn.dense_units", 10**5, "an integer from 1 to 8192"),
    ("models.cnn.filters", [], "a list of 1 to 10 integers from 1 to 2048"),
    ("models.cnn.filters", [16, 0], "a list of 1 to 10 integers from 1 to 2048"),
    ("models.cnn.filters", [4] * 11, "a list of 1 to 10 integers from 1 to 2048"),
    ("models.cnn.filters", [16, 32, 64, 128, 256, 512, 512, 512], "at least 256 for a cnn with 8 poolings"),
    # The vgg19 settings are checked while model is cnn: `-S model=vgg19` cannot fail late.
    ("models.vgg19.weights", "weights.bin", "imagenet, none, or the path of an existing .h5 file"),
    ("models.vgg19.weights", 5, "imagenet, none, or the path of an existing .h5 file"),
    ("models.vgg19.epochs", 0, "an integer from 1 to 10000"),
    ("models.vgg19.batch_size", 0, "an integer from 1 to 4096"),
    ("models.vgg19.learning_rate", NAN, "a finite number > 0"),
    ("models.vgg19.dropout", -0.1, "from 0 up to"),
    ("models.vgg19.patience", 0, "an integer from 1 to 10000"),
    ("models.vgg19.warmup_epochs", 1.5, "an integer from 0 to 10000"),
    ("models.vgg19.dense_units", 0, "an integer from 1 to 8192"),
    ("models.vgg19.fine_tune_blocks", 6, "an integer from 0 to 5"),
    ("models.vgg19.fine_tune_epochs", 0, "an integer from 1 to 10000"),
    ("models.vgg19.fine_tune_learning_rate", INF, "a finite number > 0"),
    ("prepare.lung_mask", "crp", "one of none, crop, mask"),
    ("prepare.lung_mask", True, "one of none, crop, mask"),
    ("segment.train_source", 3, "empty .* or the path of a local folder or .zip with lung masks"),
    ("segment.train_source", "synthetic", "empty .* or the path of a local folder"),
    ("segment.image_size", 100, "a multiple of 8: the U-Net halves it 3 times"),
    ("segment.image_size", 8, "an integer from"),
    ("segment.epochs", 0, "an integer from 1"),
    ("segment.batch_size", 0, "an integer from 1"),
    ("segment.learning_rate", -1, "a finite number > 0"),
    ("segment.patience", 0, "an integer from 1"),
    ("segment.filters", [16], "a list of 2 to 6 integers"),
    ("segment.max_train_images", 5, "an integer >= 10"),
    ("external", ["/data/x"], "a mapping of names to local folders or .zip files"),
    ("models.cnn.augment.rotation", 50, r"a number from 0 \(off\) to 45 \(degrees"),
    ("models.cnn.augment.rotation", NAN, "a number from 0 .off. to 45"),
    ("models.cnn.augment.shift", -0.1, "a number from 0 .off. to 0.5"),
    ("models.cnn.augment.zoom", 0.6, "a number from 0 .off. to 0.5"),
    ("models.cnn.augment.brightness", "a lot", "a number from 0 .off. to 1"),
    ("models.cnn.augment.contrast", INF, "a number from 0 .off. to 1"),
    ("models.cnn.augment.flip", "yes", "true or false"),
    ("models.cnn.lr_schedule", "step", "one of constant, plateau, cosine"),
    ("models.cnn.label_smoothing", 0.6, r"a number from 0 \(off\) to 0.5"),
    ("models.cnn.label_smoothing", NAN, "a number from 0 .off. to 0.5"),
    ("models.cnn.balanced_batches", "yes", "true or false"),
    ("models.cnn.batch_norm", 1, "true or false"),
    ("models.cnn.pooling", "max", "one of flatten, global_average"),
    ("models.cnn.tta", None, "true or false"),
    ("models.vgg19.lr_schedule", None, "one of constant, plateau, cosine"),
    ("models.vgg19.label_smoothing", -0.1, "a number from 0 .off. to 0.5"),
    ("models.vgg19.balanced_batches", 0, "true or false"),
    # vgg19's head trains on cached features: augmentation only with fine-tuning.
    ("models.vgg19.augment.rotation", 10, "while fine_tune_blocks is 0"),
    ("models.vgg19.augment.shift", INF, "a number from 0 .off. to 0.5"),
    ("models.vgg19.augment.zoom", -1, "a number from 0 .off. to 0.5"),
    ("models.vgg19.augment.brightness", 2, "a number from 0 .off. to 1"),
    ("models.vgg19.augment.contrast", True, "a number from 0 .off. to 1"),
    ("models.vgg19.augment.flip", 1, "true or false"),
]


@pytest.mark.parametrize("key, value, allowed", BAD_VALUES, ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_every_param_is_checked_for_type_and_range_before_any_work(tmp_path, key, value, allowed):
    changes = {key.replace(".", "__"): value}
    if key == "dataset.kaggle_handle":
        changes["dataset__source"] = "kaggle"
    if key == "models.cnn.filters" and len(value) == 8:
        changes["prepare__image_size"] = 128
    with pytest.raises(ParamError) as caught:
        load_with(tmp_path, **changes)
    message = str(caught.value)
    named = (
        "prepare.image_size"
        if "poolings" in allowed
        else "models.vgg19.augment"
        if "fine_tune_blocks is 0" in allowed
        else key
    )
    assert message.startswith(f"params.yaml: {named} = ") and " is not allowed: " in message, message
    assert re.search(allowed, message), message
    assert "\n" not in message


def test_the_bad_value_cases_cover_every_key_of_params_yaml():
    covered = {key for key, _, _ in BAD_VALUES}
    assert set(leaves(default_params())) - covered == set()


def test_default_params_and_the_documented_alternatives_pass_every_check(tmp_path):
    assert P.load(ROOT / "params.yaml").train.architecture == "cnn"
    for changes in (
        {"model": "vgg19", "gradcam__layer": "block5_conv4", "models__vgg19__weights": "none"},
        {"gradcam__layer": "conv5", "dataset__kaggle_version": None, "dataset__source": "kaggle"},
        {
            "seed": 2**32 - 1,
            "prepare__image_size": 1024,
            "dataset__synthetic__image_size": 1024,
            "baseline__image_size": 1024,
            "models__vgg19__fine_tune_blocks": 5,
        },
    ):
        load_with(tmp_path, **changes)


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("models.cnn.dropuot", "did you mean models.cnn.dropout?"),
        ("sead", "did you mean seed?"),
        ("dataset.synthetic.imagesize", "did you mean dataset.synthetic.image_size?"),
        ("gradcam.layers", "did you mean gradcam.layer?"),
        ("models.vgg19.filters", r"no such key \(models.vgg19 takes: weights, epochs"),
        ("models.resnet", r"no such key \(models takes: cnn, vgg19\)"),
    ],
)
def test_unknown_keys_at_any_level_are_refused_with_a_suggestion(tmp_path, key, suggestion):
    with pytest.raises(ParamError, match=rf"^params.yaml: {re.escape(key)} = .* is not allowed: .*{suggestion}"):
        load_with(tmp_path, **{key.replace(".", "__"): 0.5 if key != "models.resnet" else {"epochs": 3}})


def test_a_missing_vgg19_weights_file_matters_only_when_vgg19_is_trained(tmp_path):
    missing = str(tmp_path / "no_such_vgg19.h5")
    assert load_with(tmp_path, models__vgg19__weights=missing).train.architecture == "cnn"
    with pytest.raises(ParamError, match=r"models.vgg19.weights = .* is not allowed: .*does not exist"):
        load_with(tmp_path, models__vgg19__weights=missing, model="vgg19")


def test_a_too_small_image_for_the_other_architecture_is_checked_when_it_is_chosen(tmp_path):
    # prepare.image_size 24 suits a two-block cnn; vgg19 needs 32, which matters once it is chosen.
    load_with(tmp_path, prepare__image_size=24, baseline__image_size=8, models__cnn__filters=[8, 16])
    with pytest.raises(ParamError, match=r"prepare.image_size = 24 .*at least 32 for vgg19"):
        load_with(tmp_path, prepare__image_size=24, baseline__image_size=8, model="vgg19")


def test_gradcam_layer_names_known_statically_are_the_conv_layers_of_the_built_models():
    from lungdx.heatmaps import conv_layers
    from lungdx.models import build_cnn, build_vgg19

    small = {
        "prepare.image_size": 32,
        "baseline.image_size": 8,
        "models.cnn.dense_units": 4,
        "models.vgg19.dense_units": 4,
    }
    for filters in ([4], [4, 8, 8]):
        cnn = build_cnn(3, settings({**small, "models.cnn.filters": filters}).train)
        assert [layer.name for layer in conv_layers(cnn)] == P.conv_layer_names("cnn", filters)
    vgg19, _ = build_vgg19(3, settings({**small, "model": "vgg19", "models.vgg19.weights": "none"}).train, weights=None)
    assert [layer.name for layer in conv_layers(vgg19)] == P.conv_layer_names("vgg19")


def test_numbers_with_an_exponent_are_numbers_as_dvc_writes_them(tmp_path):
    """`dvc exp run -S models.cnn.learning_rate=3e-5` writes 3e-05 (YAML 1.2, which DVC reads as a
    number); PyYAML's YAML 1.1 rules read it as text, which used to refuse every rate below 1e-4."""
    from lungdx.models import lower_rate_advice

    text = (ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    for written, number in [("3e-05", 3e-05), ("1E-3", 1e-3), ("2.5e-4", 2.5e-4), ("-1e+2", None)]:
        path.write_text(text.replace("learning_rate: 0.0003", f"learning_rate: {written}"))
        if number is None:
            with pytest.raises(ParamError, match="models.cnn.learning_rate = -100.0 is not allowed"):
                P.load(path)
        else:
            assert P.load(path).train.learning_rate == number
    advice = lower_rate_advice("models.cnn.learning_rate", 0.0003)
    assert advice == "lower models.cnn.learning_rate (now 0.0003), e.g. to 0.00003, or check the data"
    suggested = advice.split("e.g. to ")[1].split(",")[0]
    path.write_text(text.replace("learning_rate: 0.0003", f"learning_rate: {suggested}"))
    assert P.load(path).train.learning_rate == 3e-05


def test_with_changes_sets_dotted_keys_on_a_copy_and_names_a_bad_key():
    params = {"models": {"cnn": {"epochs": 40}}, "seed": 1}
    changed = P.with_changes(params, {"models.cnn.epochs": 2, "models.cnn.new": [1], "seed": 5})
    assert changed == {"models": {"cnn": {"epochs": 2, "new": [1]}}, "seed": 5}
    assert params == {"models": {"cnn": {"epochs": 40}}, "seed": 1}  # the original is untouched
    with pytest.raises(ParamError, match=r"seed\.x = 1 .*seed is not a group of params"):
        P.with_changes(params, {"seed.x": 1})
    with pytest.raises(ParamError, match=r"models\.\.cnn = 1 .*names joined by dots"):
        P.with_changes(params, {"models..cnn": 1})


def test_every_key_comes_from_params_yaml_a_missing_one_is_named(tmp_path):
    """No default hides in the code: each key params.yaml holds must be there."""
    for key in leaves(default_params()):
        params = default_params()
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        del node[last]
        with pytest.raises(ParamError, match=rf"^params.yaml: {re.escape(key)} is missing: add it"):
            P.check(params)
    # All at once: an older params.yaml costs one run, not one per key.
    params = default_params()
    del params["prepare"]["lung_mask"], params["models"]["cnn"]["augment"], params["external"]
    with pytest.raises(
        ParamError,
        match=r"^params.yaml: prepare.lung_mask, models.cnn.augment, external are missing: "
        "add them",
    ):
        P.check(params)


def test_each_stage_gets_frozen_typed_settings_that_know_their_keys():
    params = P.load(ROOT / "params.yaml")
    assert params.sample == P.SampleSettings(seed=239, classes=(), per_class=2690, val_size=0.1, test_size=0.2)
    assert params.train.filters == (16, 32, 64, 128, 256)
    assert params.features == P.FeaturesSettings(seed=239, architecture="cnn", weights=None)
    assert not params.train.augment and params.external.sources == ()
    assert copy.deepcopy(params) == params and hash(params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.train.epochs = 1
    assert params.train.key("learning_rate") == "models.cnn.learning_rate"
    assert params.train.key("image_size") == "prepare.image_size"
    with pytest.raises(KeyError):
        params.train.key("learnig_rate")
    assert params.sample.key("classes") == "dataset.classes" and params.download.key("source") == "dataset.source"
    vgg19 = settings({"model": "vgg19", "models.vgg19.weights": "none"}).train
    assert vgg19.key("fine_tune_learning_rate") == "models.vgg19.fine_tune_learning_rate" and vgg19.weights is None
    assert settings({"model": "vgg19"}).features.weights == "imagenet"


def test_params_yaml_is_read_by_params_py_alone():
    """The library takes settings; only params.py (and, through params.read: the command line and
    dvc.yaml's reader for the seed or foreach names alone, stage_deps to hold dvc.lock's recorded
    values against it) reads params.yaml."""
    readers = {}
    for path in sorted((ROOT / "lungdx").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in runtime_nodes(tree):  # `if TYPE_CHECKING:` imports name settings types; they never run
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.ImportFrom) and node.module in (None, "lungdx")
                else [node.module]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            if any(n in ("params", "lungdx.params") or (n or "").endswith(".params") for n in names):
                readers.setdefault(path.name, node.lineno)
        if path.name != "params.py":
            assert 'params.yaml")' not in path.read_text() and '"params.yaml"' not in path.read_text(), path
    assert set(readers) == {"cli.py", "pipeline.py", "stage_deps.py"}, readers


def test_the_documented_settings_for_real_xrays_are_valid_params_and_each_changes_a_default():
    """docs/data.md's command for real X-rays: every -S names a param, each value is accepted, and
    none repeats a default (a flag left there after a default moved would say nothing)."""
    from benchmarks.common import real_xray_settings

    pairs = real_xray_settings(ROOT / "docs" / "data.md")
    changes = {k: yaml.safe_load(v) for k, v in pairs.items() if k != "dataset.source"}
    assert len(changes) >= 10 and re.match(r"^/", pairs["dataset.source"]), pairs
    defaults = P.read(ROOT / "params.yaml")
    for key, value in changes.items():
        assert P.get(defaults, key) != value, f"{key}={value} is already the default"
    cnn = settings(changes).train
    assert cnn.batch_norm and cnn.pooling == "global_average" and cnn.tta and cnn.augment


@pytest.mark.parametrize(
    "command, error",
    [
        ("dvc exp run -S a", "must be key=value"),
        ("dvc exp run -S a=1 --set-param b=2", "must be `dvc exp run"),
        ("dvc repro -S a=1", "must be `dvc exp run"),
    ],
)
def test_a_settings_block_that_is_not_plain_pairs_is_refused_by_name(tmp_path, command, error):
    """Nothing in the documented command is dropped silently: what the tests and the benchmark read
    is what a user who copies it runs."""
    from benchmarks.common import real_xray_settings

    docs = tmp_path / "data.md"
    docs.write_text(f"<!-- real-xray-settings -->\n```bash\n{command}\n```\n<!-- /real-xray-settings -->\n")
    with pytest.raises(ValueError, match=error):
        real_xray_settings(docs)
    docs.write_text("no block")
    with pytest.raises(ValueError, match="data.md: no ```bash block"):
        real_xray_settings(docs)

"""Hostile recipes: generated garbage, mutated schemas and spliced text.

``parse_recipe`` either returns a Recipe or raises a SqueezerError whose message is one printable
line starting with the source; any other exception is a bug. Through the CLI, ``recipe validate``
exits 0 or 2 with exactly one line on stderr. The number of generated recipes scales with the
hypothesis profile: 5x ``max_examples`` per property (``ci``: 3 x 1,000 on the API, 100 on the CLI).
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import squeezer
from squeezer import SqueezerError
from squeezer.cli import app
from squeezer.recipe import parse_recipe, recipe_from_dict, recipe_to_dict

REGISTRY = squeezer.load_registry(autoload=False)
SOURCE = "fuzz.toml"
MANY = settings(max_examples=settings().max_examples * 5, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=max(10, settings().max_examples // 2), deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

BASE: dict[str, Any] = {
    "seed": 0,
    "output_dir": "out",
    "device": "cpu",
    "disable_plugins": [],
    "model": {"factory": "squeezer.examples.digits:make_model", "width": 4},
    "data": {"factory": "squeezer.examples.digits:make_loaders", "batch_size": 128},
    "training": {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "lr_schedule": "cosine"},
    "targets": {"types": ["Linear", "Conv2d"], "include": ["*"], "exclude": ["0"], "parameters": []},
    "stages": [
        {"type": "train", "name": "dense", "epochs": 1},
        {"type": "prune", "importance": "l1", "scheduler": {"name": "geometric", "target": 0.8, "rounds": 2},
         "quantizer": {"name": "lsq", "bits": 4, "overrides": [{"pattern": "@first", "bits": 8}]},
         "epochs_per_round": 1, "scope": "global", "min_density": 0.01, "lr": 0.001},
        {"type": "mutual", "distillation": {"name": "hinton", "temperature": 4.0}, "warmup_epochs": 1,
         "epochs": 1, "teacher_owns": ["norm"], "kd_weight": 1.0},
        {"type": "distill", "distillation": "mse", "student": {"factory": "x.y:z", "options": {"width": 2}},
         "kd_weight": 0.5},
        # after the distill stage: a second quantizer before it would be refused (quantized already)
        {"type": "quantize", "quantizer": {"name": "minmax", "bits": 8, "options": {"per_channel": True}}},
    ],
}

NAMES = ["train", "prune", "quantize", "mutual", "distill", "l1", "l2", "lamp", "lsq", "minmax", "geometric",
         "cubic", "one_shot", "hinton", "mse", "", " ", "L1", "l1 ", "prune\n", "lsq\x00", "ls-q", "🙂", "x" * 300,
         "global", "layer", "norm", "bias", "sgd", "adamw", "constant", "@first", "@last", "*", "[", "a.b:c",
         "auto", "cuda:99", "magnitude", "nope"]

text = st.text(st.characters(codec="utf-8"), max_size=30)
int64 = st.integers(-(2**63), 2**63 - 1)
numbers = st.one_of(st.integers(-3, 300), int64, st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 0.5, 1.5, -0.0, 1e-300, 2**53 + 1]))
scalars = st.one_of(numbers, st.booleans(), text, st.sampled_from(NAMES), st.dates(), st.times(),
                    st.datetimes(min_value=datetime.datetime(1, 1, 1)))
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(text, st.sampled_from(NAMES)), inner, max_size=4)
), max_leaves=8)


def toml_key(key: str) -> str:
    return toml_string(key)


def toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v == math.inf else ("-inf" if v == -math.inf else repr(v)))
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, datetime.datetime | datetime.date | datetime.time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(data: dict[str, Any]) -> str:
    """Every top-level key on its own line, everything below as inline tables and arrays."""
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in data.items())


def locations(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside ``node`` (containers included)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        out.append((*path, key))
        out.extend(locations(child, (*path, key)))
    return out


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


@st.composite
def mutated_recipes(draw: st.DrawFn) -> dict[str, Any]:
    """The full recipe above with 1-3 random edits: replace, delete, add or rename a field."""
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        paths = locations(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(data, path), path[-1]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "rename"]))
        # the schedules plugin materializes `rounds` values: keep them small
        value = draw(st.one_of(st.integers(-3, 50), text, st.floats()) if key == "rounds" else junk)
        if action == "replace":
            parent[key] = value
        elif action == "delete":
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.one_of(text, st.sampled_from(NAMES)))] = value
        elif action == "add":
            parent.insert(key, value)
        elif action == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(text, st.sampled_from(NAMES)))
            parent[new] = parent.pop(key)
    return data


def check_parse(text_: str) -> Any:
    """The contract: a Recipe (that round-trips through plain data) or a one-line SqueezerError."""
    try:
        recipe = parse_recipe(text_, source=SOURCE, registry=REGISTRY)
    except SqueezerError as exc:
        message = str(exc)
        assert message.startswith(f"{SOURCE}: "), message
        assert "\n" not in message and "\r" not in message, message
        assert message.isprintable(), message
        assert len(message) < 2000, message
        return None
    data = recipe_to_dict(recipe)
    json.dumps(data, default=str, allow_nan=False)  # every accepted number is finite
    again = recipe_from_dict(data, source="again")
    assert recipe_to_dict(again) == data
    return recipe


def test_the_base_recipe_is_valid() -> None:
    assert check_parse(to_toml(BASE)) is not None


@MANY
@given(st.text(st.characters(codec="utf-8"), max_size=400))
def test_random_text(text_: str) -> None:
    check_parse(text_)


@MANY
@given(mutated_recipes())
def test_mutated_schema(data: dict[str, Any]) -> None:
    check_parse(to_toml(data))


@MANY
@given(st.data())
def test_spliced_text(data: st.DataObject) -> None:
    """Valid text with a slice replaced by random characters (unterminated strings, stray brackets...)."""
    base = to_toml(BASE)
    start = data.draw(st.integers(0, len(base)))
    end = data.draw(st.integers(start, min(len(base), start + 40)))
    insert = data.draw(st.one_of(text, st.sampled_from(['"', "[", "]]", "{", "=", "\n[[stages]]\n", "\\u", "#",
                                                        "'''", "\n[model]\n", "\ntype = 3\n"])))
    check_parse(base[:start] + insert + base[end:])


# --- targeted cases: each was a traceback before the fixes in recipe/loader.py ----------------

FOUND = {
    "stage type not a string": ('stages = [{type = ["prune"]}]', "stages[0].type: unknown stage type ['prune']"),
    "stage type a table": ("stages = [{type = {a = 1}}]", "stages[0].type: unknown stage type {'a': 1}"),
    "factory options not a table": ('stages = [{type = "train"}]\n[model]\nfactory = "a:b"\noptions = 5',
                                    "model.options: must be a table, got an integer"),
    "factory options an array": ('stages = [{type = "train"}]\n[model]\nfactory = "a:b"\noptions = [1]',
                                 "model.options: must be a table, got an array"),
    "strategy options not a table": ('stages = [{type = "prune", scheduler = {name = "one_shot", target = 0.5, '
                                     "options = 5}}]", "stages[0].scheduler.options: must be a table"),
    "override options not a table": ('stages = [{type = "quantize", quantizer = {name = "lsq", overrides = '
                                     '[{pattern = "*", options = "x"}]}}]',
                                     "stages[0].quantizer.overrides[0].options: must be a table"),
    "arrays nested 2000 deep": ("x = " + "[" * 2000 + "]" * 2000, "nested too deeply"),
    "inline tables nested 2000 deep": ("x = " + "{a = " * 2000 + "1" + "}" * 2000, "nested too deeply"),
    "infinite learning rate": ('stages = [{type = "train", lr = inf}]', "stages[0].optim.lr: must be a finite"),
    "NaN min_density": ('stages = [{type = "prune", scheduler = "one_shot", min_density = nan}]',
                        "stages[0].min_density: must be a finite number, got nan"),
    "infinite training weight decay": ('stages = [{type = "train"}]\n[training]\nweight_decay = inf',
                                       "training.weight_decay: must be a finite"),
    "unknown key with a newline": ('"bad\\nkey" = 1\nstages = [{type = "train"}]', "'bad\\nkey': unknown field"),
}
FACTORIES = '[model]\nfactory = "a:b"\n[data]\nfactory = "a:b"\n'


@pytest.mark.parametrize("case", list(FOUND))
def test_found_and_fixed(case: str) -> None:
    text_, needle = FOUND[case]
    if "[model]" not in text_:
        text_ = f"{text_}\n{FACTORIES}"
    with pytest.raises(SqueezerError) as info:
        parse_recipe(text_, source=SOURCE, registry=REGISTRY)
    assert needle in str(info.value)
    check_parse(text_)


SCHEMA = {
    "wrong type": ('stages = [{type = "train", epochs = "3"}]', "stages[0].epochs: must be an integer"),
    "sparsity above 1": ('stages = [{type = "prune", scheduler = {name = "one_shot", target = 1.5}}]',
                         "stages[0].scheduler: scheduler 'one_shot': 'target' must be <= 1.0"),
    "negative sparsity": ('stages = [{type = "prune", scheduler = {name = "cubic", target = -0.1}}]',
                          "'target' must be >= 0.0"),
    "bits out of range": ('stages = [{type = "quantize", quantizer = {name = "lsq", bits = 1}}]',
                          "stages[0].quantizer: quantizer 'lsq': bits must be in 2..8"),
    "bits in an override": ('stages = [{type = "quantize", quantizer = {name = "lsq", overrides = '
                            '[{pattern = "*", bits = 99}]}}]', "stages[0].quantizer.overrides[0]"),
    "infinite factory option": ('stages = [{type = "train"}]\n[model]\nfactory = "a:b"\nwidth = inf\n[data]\n'
                                'factory = "a:b"', "model.options.width: must be a finite number, got inf"),
    "nan plugin option": ('stages = [{type = "prune", scheduler = {name = "one_shot", target = 0.5, x = [nan]}}]',
                          "stages[0].scheduler.options.x[0]: must be a finite number, got nan"),
    "integer beyond float": ('stages = [{type = "train", lr = 1' + "0" * 400 + '}]',
                             "stages[0].optim.lr: must be a finite number, got an integer of 401 digits"),
    "inf under an odd key": ('stages = [{type = "train"}]\n[model]\nfactory = "a:b"\n"a\\u001fb" = inf\n'
                            '[data]\nfactory = "a:b"', "model.options.'a\\x1fb': must be a finite number"),
    "unknown selector": ('stages = [{type = "quantize", quantizer = {name = "lsq", overrides = '
                         '[{pattern = "@frist", bits = 8}]}}]', "unknown selector '@frist'"),
    "unknown activation selector": ('stages = [{type = "quantize", quantizer = "lsq", activations = {overrides = '
                                    '[{pattern = "@dw", skip = true}]}}]', "unknown selector '@dw'"),
    "zero temperature": ('stages = [{type = "mutual", distillation = {name = "hinton", temperature = 0}}]',
                         "stages[0].distillation: distillation_loss 'hinton': 'temperature' must be > 0.0"),
    "unknown stage": ('stages = [{type = "prun"}]', "stages[0].type: unknown stage type 'prun'; did you mean"),
    "unknown plugin": ('stages = [{type = "prune", importance = "l3", scheduler = "one_shot"}]',
                       "stages[0].importance: unknown importance 'l3'"),
    "unknown option": ('stages = [{type = "prune", scheduler = {name = "one_shot", target = 0.5, speed = 1}}]',
                       "unknown option 'speed' for scheduler 'one_shot'"),
    "empty stage list": ("stages = []", "stages: needs at least one stage"),
    "stages not an array": ('stages = "train"', "stages: must be an array of tables"),
    "missing model factory": ('stages = [{type = "train"}]\n[model]\nwidth = 4\n[data]\nfactory = "a:b"',
                              "model.factory: required field is missing"),
    "malformed factory path": ('stages = [{type = "train"}]\n[model]\nfactory = "no colon"\n[data]\n'
                               'factory = "a:b"', "model.factory: expected 'module:function'"),
    "missing scheduler": ('stages = [{type = "prune"}]', "stages[0].scheduler: required field is missing"),
    "bad teacher_owns": ('stages = [{type = "mutual", teacher_owns = ["weights"]}]', "stages[0].teacher_owns"),
    "bad student_distills": ('stages = [{type = "mutual", student_distills = "sometimes"}]',
                             "stages[0].student_distills: must be in ('always', 'when_teacher_leads')"),
    "invalid TOML": ("stages = [", "invalid TOML"),
}


@pytest.mark.parametrize("case", list(SCHEMA))
def test_schema_violations_name_the_field(case: str) -> None:
    text_, needle = SCHEMA[case]
    if "[model]" not in text_:
        text_ = f"{text_}\n{FACTORIES}"
    with pytest.raises(SqueezerError) as info:
        parse_recipe(text_, source=SOURCE, registry=REGISTRY)
    assert str(info.value).startswith(f"{SOURCE}: ")
    assert needle in str(info.value), str(info.value)


# --- through the CLI ---------------------------------------------------------------------------

runner = CliRunner()


def validate(path: Path) -> Any:
    return runner.invoke(app, ["recipe", "validate", str(path)])


def assert_cli_contract(result: Any, path: Path) -> None:
    assert result.exit_code in (0, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert result.stdout.startswith(f"ok: {path}")
        return
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.stderr


@pytest.fixture(scope="module")
def scratch() -> Any:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@FEW
@given(st.one_of(mutated_recipes().map(to_toml), st.text(st.characters(codec="utf-8"), max_size=200)))
def test_cli_validate_generated(scratch: Path, text_: str) -> None:
    path = scratch / "generated.toml"
    path.write_text(text_, encoding="utf-8")
    result = validate(path)
    assert_cli_contract(result, path)
    if result.exit_code == 0:
        assert check_parse(text_) is not None


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00garbage", b"\x80abc = 1", b"stages = [",
                                     ("x = " + "[" * 5000).encode()])
def test_cli_validate_undecodable_empty_and_deep(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "r.toml"
    path.write_bytes(content)
    result = validate(path)
    assert result.exit_code == 2
    assert_cli_contract(result, path)


def test_cli_validate_a_directory_and_a_missing_file(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing.toml"):
        result = validate(path)
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and str(path) in result.stderr

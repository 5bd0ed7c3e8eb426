"""Spec validation: valid specs load; each kind of bad input names its field."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from models.activations import ACTIVATIONS
from search.errors import SpecError
from search.spec import load_spec, parse_spec
from tests.search.conftest import write_spec


def test_valid_spec_round_trips(base_spec: dict[str, Any]) -> None:
    spec = parse_spec(base_spec)
    assert spec.dataset.name == "digits"
    assert spec.space.activations == ("relu", "tanh")
    assert spec.experiment_name == "tiny"
    # Ray ships specs to workers: they must pickle, and stay equal.
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec.search_id.startswith("tiny-")


def test_search_id_depends_on_content_not_tracking(base_spec: dict[str, Any]) -> None:
    a = parse_spec(base_spec)
    base_spec["tracking"] = {"uri": "http://example.invalid:5000"}
    b = parse_spec(base_spec)
    base_spec["seed"] = 1
    c = parse_spec(base_spec)
    assert a.search_id == b.search_id
    assert a.search_id != c.search_id


def test_yaml_exponent_floats_are_numbers(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(
        "name: x\ndataset: digits\nspace:\n  activations: [relu]\n  lr: {low: 1e-3, high: 1}\n"
    )
    assert load_spec(p).space.lr.low == pytest.approx(1e-3)


def test_examples_validate() -> None:
    root = Path(__file__).resolve().parents[2] / "examples"
    specs = sorted(root.glob("*.yaml"))
    assert {p.name for p in specs} >= {"quickstart.yaml", "elu_question.yaml"}
    for p in specs:
        load_spec(p)
    assert len(load_spec(root / "quickstart.yaml").space.activations) >= 4


def _mutate(spec: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = spec
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("path", "value", "field", "needle"),
    [
        ("space.activations", ["relu", "swishy"], "space.activations[1]", "elu"),
        ("dataset", "imagenet", "dataset.name", "digits"),
        ("space.depth", {"low": 0, "high": 3}, "space.depth", "1..64"),
        ("space.depth", {"low": 3, "high": 2}, "space.depth", "low"),
        ("space.lr", {"low": -0.1, "high": 1.0}, "space.lr.low", "greater than 0"),
        ("space.initializers", ["glorot"], "space.initializers[0]", "xavier_normal"),
        ("space.optimizers", ["lbfgs"], "space.optimizers[0]", "momentum"),
        ("budget.trials_per_activation", 0, "budget.trials_per_activation", "greater than"),
        ("budget.trials_per_activation", "many", "budget.trials_per_activation", "integer"),
        ("budget.trials_per_activation", True, "budget.trials_per_activation", "integer"),
        ("convergence.eval_every", 10_000, "convergence", "eval_every"),
        ("sampler.name", "cmaes", "sampler.name", "tpe"),
        ("name", "has spaces", "name", "pattern"),
        ("model.depth", 3, "model.depth", "width"),
    ],
)
def test_bad_fields_are_named(
    base_spec: dict[str, Any], path: str, value: Any, field: str, needle: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(_mutate(base_spec, path, value))
    err = info.value
    assert err.field == field
    assert needle in err.one_line()
    assert "\n" not in err.one_line()


def test_unknown_activation_lists_every_valid_name(base_spec: dict[str, Any]) -> None:
    base_spec["space"]["activations"] = ["nope"]
    with pytest.raises(SpecError) as info:
        parse_spec(base_spec)
    assert info.value.allowed == tuple(sorted(ACTIVATIONS))


def test_missing_required_field(base_spec: dict[str, Any]) -> None:
    del base_spec["space"]
    with pytest.raises(SpecError, match="space: required field is missing"):
        parse_spec(base_spec)


def test_both_targets_rejected(base_spec: dict[str, Any]) -> None:
    base_spec["convergence"]["target_accuracy"] = 0.9
    with pytest.raises(SpecError, match="exactly one"):
        parse_spec(base_spec)


def test_accuracy_target_alone_replaces_default_loss(base_spec: dict[str, Any]) -> None:
    base_spec["convergence"] = {"target_accuracy": 0.9, "max_steps": 100}
    conv = parse_spec(base_spec).convergence
    assert conv.target_loss is None and conv.target_accuracy == 0.9


def test_max_steps_multiple_of_eval_every(base_spec: dict[str, Any]) -> None:
    base_spec["convergence"].update(max_steps=110, eval_every=25)
    with pytest.raises(SpecError, match="multiple of eval_every"):
        parse_spec(base_spec)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: [unclosed\n", "malformed YAML"),
        ("- just\n- a list\n", "mapping"),
        ("!!python/object/apply:os.system ['echo hi']\n", "malformed YAML"),
        ("", "mapping"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match=needle):
        load_spec(p)


def test_missing_file_and_binary_junk(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")
    junk = tmp_path / "junk.yaml"
    junk.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(SpecError, match="UTF-8"):
        load_spec(junk)


def test_write_spec_helper_roundtrip(tmp_path: Path, base_spec: dict[str, Any]) -> None:
    assert load_spec(write_spec(tmp_path / "ok.yaml", base_spec)).name == "tiny"


def test_optuna_storage_kinds(base_spec: dict[str, Any]) -> None:
    base_spec["tracking"] = {"optuna_storage": "postgresql://u:p@localhost/optuna"}
    assert parse_spec(base_spec).tracking.optuna_storage.startswith("postgresql://")
    base_spec["tracking"] = {"optuna_storage": "/shared/optuna.journal"}
    assert parse_spec(base_spec).tracking.optuna_storage == "/shared/optuna.journal"
    base_spec["tracking"] = {"optuna_storage": "sqlite:///optuna.db"}
    with pytest.raises(SpecError, match="tracking.optuna_storage: unsupported Optuna storage"):
        parse_spec(base_spec)


def test_redact_hides_passwords() -> None:
    from search.tracking import redact

    assert redact("postgresql://me:secret@db:5432/x") == "postgresql://me:***@db:5432/x"
    assert redact("/path/optuna.journal") == "/path/optuna.journal"

"""Labels: the taxonomy, scope checks, MLflow tags, registry rows, search and recommendation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from maelstrom_run.config import taxonomy
from maelstrom_run.core.errors import ConfigError
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.labels import search
from maelstrom_run.launch.registry import Registry
from maelstrom_run.tracking.mlflow_run import run_tags

CONF = Path(__file__).resolve().parents[1] / "conf"


def error_of(labels: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        taxonomy.flatten(labels)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_taxonomy_has_the_scopes_and_categories() -> None:
    tax = taxonomy.load()
    assert list(tax.scopes) == ["project", "code", "data", "experiment", "run"]
    assert set(tax.categories) == {
        "task",
        "domain",
        "data_size",
        "data_type",
        "framework",
        "model_family",
        "licence",
        "hardware",
    }
    assert all(
        c.values and c.weight > 0 and set(c.scopes) <= set(tax.scopes) for c in tax.categories.values()
    )


@pytest.mark.parametrize("path", sorted((CONF / "labels").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_label_file_is_valid(path: Path) -> None:
    labels = taxonomy.flatten(yaml.safe_load(path.read_text()))
    assert {c for _, c, _ in labels} >= {"task", "domain", "framework"}


def test_flat_labels_are_in_their_home_scope_and_scoped_ones_where_given() -> None:
    labels = taxonomy.flatten(
        {"framework": "pytorch", "domain": ["weather", "climate"], "data": {"licence": "cc-by-4.0"}}
    )
    assert labels == [
        ("code", "framework", "pytorch"),
        ("project", "domain", "weather"),
        ("project", "domain", "climate"),
        ("data", "licence", "cc-by-4.0"),
    ]
    tags = taxonomy.tags(
        {"framework": "pytorch", "domain": ["weather", "climate"], "run": {"hardware": "gpu"}}
    )
    assert tags == {"label.framework": "pytorch", "label.domain": "weather,climate", "label.hardware": "gpu"}
    assert taxonomy.tags({"data": {"licence": "cc-by-4.0"}}) == {"label.data.licence": "cc-by-4.0"}


def test_unknown_or_misplaced_labels_get_the_closest_valid_one() -> None:
    assert error_of({"framwork": "pytorch"}).startswith(
        "labels.framwork: unknown label category; did you mean 'framework'?"
    )
    assert error_of({"framework": "pytorh"}).startswith(
        "labels.framework: 'pytorh' is not a known framework; did you mean 'pytorch'?"
    )
    assert error_of({"data": {"framework": "pytorch"}}) == (
        "labels.data.framework: framework labels describe code, run, not data; "
        "did you mean 'labels.framework' or 'labels.run.framework'?"
    )
    assert error_of({"code": {"hardware": "gpu"}}).startswith(
        "labels.code.hardware: hardware labels describe run, experiment, not code; did you mean 'labels.hardware'"
    )
    assert error_of({"run": "gpu"}).startswith("labels.run: a scope takes a mapping")
    assert error_of({"task": {"x": 1}}).startswith("labels.task: expected a label value")


def test_a_taxonomy_of_your_own_extends_the_shipped_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, maelstrom_home: Path
) -> None:
    (tmp_path / "taxonomy.yaml").write_text(
        "categories:\n  framework:\n    values: [flax]\n  region:\n    scopes: [data, run]\n    values: [nordic]\n"
    )
    monkeypatch.setenv("MAELSTROM_CONFIG_PATH", str(tmp_path))
    labels = taxonomy.flatten({"framework": "flax", "region": "nordic"})
    assert labels == [("code", "framework", "flax"), ("data", "region", "nordic")]
    assert taxonomy.flatten({"framework": "pytorch"})  # shipped values stay


def test_composition_rejects_a_label_outside_the_taxonomy(
    run_cli: Callable[..., Any], cli_env: dict[str, str]
) -> None:
    result = run_cli(["app=ap1", "labels.framework=pytorh", "dry_run=true"], env=cli_env)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "maelstrom-run: error: labels.framework: 'pytorh' is not a known framework"
    )
    result = run_cli(["app=ap1", "+labels.data.hardware=gpu", "dry_run=true"], env=cli_env)
    assert result.returncode == 2 and "hardware labels describe run, experiment, not data" in result.stderr
    result = run_cli(["app=ap1", "labels.run.hardware=gpu", "dry_run=true"], env=cli_env)
    assert result.returncode == 2 and "add it with +labels.run.hardware=VALUE" in result.stderr


# -- runs: tags and registry rows -------------------------------------------------------------


def make_spec(
    run_id: str, app: str, labels: dict[str, Any], run_dir: Path, experiment: str | None = None
) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        kind="app",
        app=app,
        entry="toyapp:main",
        config={
            "app": {"name": app, "entry": "toyapp:main"},
            "backend": {"name": "local", "kind": "local"},
            "tracking": {"uri": None, "experiment": experiment},
            "labels": labels,
        },
        overrides=[f"app={app}", "model.learning_rate=0.01"],
        run_dir=str(run_dir / run_id),
        config_hash="0" * 64,
    )


def finished(registry: Registry, spec: RunSpec, metrics: dict[str, float]) -> None:
    registry.add_runs([spec])
    Path(spec.run_dir).mkdir(parents=True)
    Path(spec.run_dir, "result.json").write_text(json.dumps({"state": "succeeded", "metrics": metrics}))
    registry.update(spec.run_id, state="succeeded")


def test_labels_become_mlflow_tags_and_registry_rows(maelstrom_home: Path) -> None:
    spec = make_spec(
        "ap2-1", "ap2", {"framework": "pytorch", "run": {"hardware": "nvidia-a100"}}, maelstrom_home / "runs"
    )
    tags = run_tags(spec)
    assert tags["label.framework"] == "pytorch" and tags["label.hardware"] == "nvidia-a100"
    registry = Registry()
    registry.add_runs([spec])
    registry.add_runs([spec])  # recorded again (a resumed submission): no duplicate rows
    with registry._connect() as db:
        rows = db.execute(
            "SELECT run_id, scope, category, value FROM run_labels ORDER BY category"
        ).fetchall()
    assert [tuple(r) for r in rows] == [
        ("ap2-1", "code", "framework", "pytorch"),
        ("ap2-1", "run", "hardware", "nvidia-a100"),
    ]


@pytest.fixture
def history(maelstrom_home: Path) -> Registry:
    """Past runs: two of ap1 (TensorFlow U-Net), one of ap2 on a GPU, one failed."""
    registry = Registry()
    runs = maelstrom_home / "runs"
    ap1 = yaml.safe_load((CONF / "labels" / "ap1.yaml").read_text())
    ap2 = yaml.safe_load((CONF / "labels" / "ap2.yaml").read_text())
    finished(
        registry,
        make_spec("ap1-a", "ap1", ap1, runs, experiment="t2m-benchmark"),
        {"loss": 0.5, "val_loss": 0.7},
    )
    finished(
        registry,
        make_spec("ap1-b", "ap1", ap1, runs, experiment="t2m-benchmark"),
        {"loss": 0.4, "val_loss": 0.6},
    )
    finished(
        registry, make_spec("ap2-a", "ap2", {**ap2, "run": {"hardware": "gpu"}}, runs), {"accuracy": 0.9}
    )
    failed = make_spec("ap2-b", "ap2", ap2, runs)
    registry.add_runs([failed])
    registry.update("ap2-b", state="failed")
    return registry


def test_search_across_apps_experiments_and_runs(history: Registry) -> None:
    items = search.catalogue(history)
    query = taxonomy.parse_query(["framework=pytorch", "task=classification"])
    found = search.search(items, query, ["rain"])
    assert [(i.kind, i.name) for i in found] == [("app", "ap2")]  # "raining" in its description
    found = search.search(items, taxonomy.parse_query(["framework=tensorflow"]), [])
    names = {(i.kind, i.name) for i in found}
    assert {("app", "ap1"), ("experiment", "t2m-benchmark"), ("run", "ap1-a"), ("run", "ap1-b")} <= names
    assert ("app", "ap2") not in names
    gpu = search.search(items, taxonomy.parse_query(["run.hardware=gpu"]), [])
    assert {(i.kind, i.name) for i in gpu} == {("run", "ap2-a"), ("experiment", "ap2")}
    by_text = search.search(items, [], ["T2M-benchmark"])
    assert {(i.kind, i.name) for i in by_text} == {
        ("experiment", "t2m-benchmark"),
        ("run", "ap1-a"),
        ("run", "ap1-b"),
    }
    with pytest.raises(ConfigError, match="did you mean 'framework'"):
        taxonomy.parse_query(["framwork=pytorch"])
    with pytest.raises(ConfigError, match="expected CATEGORY=VALUE"):
        taxonomy.parse_query(["pytorch"])


def test_recommend_ranks_by_weighted_overlap_and_shows_the_best_metric(history: Registry) -> None:
    items = search.catalogue(history)
    ranked = search.recommend(items, taxonomy.parse_query(["task=post-processing", "framework=tensorflow"]))
    top = [(i.kind, i.name) for i in ranked if i.score == 1.0]
    assert ("app", "ap1") in top and ("run", "ap1-b") in top
    app = next(i for i in ranked if i.name == "ap1")
    assert app.best == ("val_loss", 0.6, "ap1-b")  # the lower validation loss of its two runs
    assert all(a.score >= b.score for a, b in zip(ranked, ranked[1:], strict=False))
    # task weighs 3, framework 1.5: sharing the task alone scores 3 / 4.5
    partial = search.recommend(items, taxonomy.parse_query(["task=post-processing", "framework=pytorch"]))
    scores = {i.name: i.score for i in partial if i.kind == "app"}
    assert scores["ap1"] == pytest.approx(3 / 4.5)
    assert scores["ap2"] == pytest.approx(1.5 / 4.5)


def test_recommend_for_an_app_leaves_it_out(history: Registry) -> None:
    items = search.catalogue(history)
    ranked = search.recommend(items, search.app_query("ap2"), exclude_app="ap2")
    assert ranked and all(i.app != "ap2" for i in ranked)
    with pytest.raises(ConfigError, match="app=ap9: no such app"):
        search.app_query("ap9")


def test_cli_labels_search_recommend(
    run_cli: Callable[..., Any], cli_env: dict[str, str], history: Registry
) -> None:
    listing = run_cli(["maelstrom", "labels", "list"], env=cli_env, check=True).stdout
    assert "model_family" in listing and "post-processing" in listing and "experiment" in listing
    found = run_cli(
        [
            "maelstrom",
            "search",
            "--label",
            "framework=pytorch",
            "--label",
            "task=classification",
            "--text",
            "rain",
        ],
        env=cli_env,
        check=True,
    ).stdout
    assert " ap2 " in found and "1 app(s), 0 experiment(s), 0 run(s) found" in found
    ranked = run_cli(["maelstrom", "recommend", "app=ap1", "--kind", "run"], env=cli_env, check=True).stdout
    assert "ap2-a" in ranked and "ap1-a" not in ranked and "accuracy=0.9" in ranked
    bad = run_cli(["maelstrom", "recommend", "--label", "task=postprocessing"], env=cli_env)
    assert bad.returncode == 2
    assert bad.stderr.startswith(
        "maelstrom: error: labels.task: 'postprocessing' is not a known task; did you mean"
    )
    bad = run_cli(["maelstrom", "recommend"], env=cli_env)
    assert bad.returncode == 2 and "give --label CATEGORY=VALUE" in bad.stderr

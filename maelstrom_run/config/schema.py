"""Structured schemas of every config group.

Plain dataclasses: the validator in :mod:`maelstrom_run.config.validate` checks a
composed config against them (unknown keys, types, mandatory values) and reports
the full key path. Groups whose shape depends on a discriminator (``model.arch``,
``dataset.kind``) map each value to its own dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

MISSING: Any = "???"

Tier = Literal["tiny", "small", "full"]


@dataclass
class AppConf:
    name: str = MISSING
    #: ``module:function`` of the application's entry point, ``main(ctx) -> dict``.
    entry: str = MISSING
    framework: Literal["tensorflow", "pytorch", "any"] = "any"
    description: str = ""
    #: Top-level config sections of the app's own (e.g. ``augment``), passed to it unchecked.
    sections: list[str] = field(default_factory=list)


@dataclass
class TrainConf:
    tier: Tier = "tiny"
    epochs: int = 1
    batch_size: int = 16
    seed: int = 1234
    steps_per_epoch: int | None = None


@dataclass
class AP1Size:
    runs: int = MISSING
    leadtimes: int = MISSING
    y: int = MISSING
    x: int = MISSING
    predictors: int = MISSING
    static_predictors: int = MISSING


@dataclass
class AP1Dataset:
    kind: str = "ap1"
    name: str = MISSING
    source: Literal["sample", "files"] = "sample"
    #: Directory (or glob) of NetCDF files when ``source: files``.
    path: str | None = None
    tiers: dict[str, AP1Size] = field(default_factory=dict)
    validation_fraction: float = 0.2


@dataclass
class AP2Size:
    samples: int = MISSING


@dataclass
class AP2Dataset:
    kind: str = "ap2"
    name: str = MISSING
    source: Literal["sample", "files"] = "sample"
    #: CSV file with columns ``text`` and ``raining`` when ``source: files``.
    path: str | None = None
    tiers: dict[str, AP2Size] = field(default_factory=dict)
    validation_fraction: float = 0.2


@dataclass
class LoaderConf:
    kind: Literal["gridded", "text"] = MISSING
    threads: int = 2
    prefetch: int = 2
    shuffle: bool = True
    normalise: bool = True
    patch_size: int | None = None
    features: list[str] = field(default_factory=list)


@dataclass
class ModelBase:
    arch: str = MISSING
    name: str = MISSING
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0


@dataclass
class UNetModel(ModelBase):
    filters: int = 16
    levels: int = 2
    kernel_size: int = 3
    dropout: float = 0.0
    loss: Literal["mae", "mse"] = "mae"


@dataclass
class TransformerModel(ModelBase):
    vocab_size: int = 4096
    max_len: int = 64
    d_model: int = 64
    heads: int = 4
    layers: int = 2
    ff_dim: int = 128
    dropout: float = 0.1
    #: Directory with pretrained weights (e.g. DeBERTa-v3); nothing is downloaded.
    pretrained: str | None = None


@dataclass
class Resources:
    queue: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int | None = None
    gpus_per_node: int = 0
    memory: str | None = None
    #: Time limit: ``30m``, ``2h``, ``1d12h`` or ``HH:MM:SS``.
    time: str | None = None
    reservation: str | None = None
    constraint: str | None = None
    qos: str | None = None
    account: str | None = None


@dataclass
class Apptainer:
    image: str | None = None
    options: list[str] = field(default_factory=list)


@dataclass
class Environment:
    modules: list[str] = field(default_factory=list)
    venv: str | None = None
    apptainer: Apptainer = field(default_factory=Apptainer)
    variables: dict[str, str] = field(default_factory=dict)
    pre_commands: list[str] = field(default_factory=list)
    post_commands: list[str] = field(default_factory=list)
    login_pre_commands: list[str] = field(default_factory=list)
    login_post_commands: list[str] = field(default_factory=list)


@dataclass
class BackendConf:
    name: str = MISSING
    kind: Literal["local", "slurm", "slurmrest", "unicore", "firecrest"] = MISSING
    #: Jobs of a sweep running (local) or submitted (clusters) at once.
    max_parallel: int = 2
    url: str | None = None
    machine: str | None = None
    token_url: str | None = None
    #: Where run directories live on the target; default ``$MAELSTROM_HOME/runs``.
    workdir: str | None = None
    #: Secret references only, e.g. ``${secret:env:NAME}``.
    credentials: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    environment: Environment = field(default_factory=Environment)
    exclude: list[str] = field(default_factory=list)


@dataclass
class TrackingConf:
    backend: Literal["mlflow"] = "mlflow"
    uri: str | None = None
    experiment: str | None = None
    timeout_s: float = 10.0
    plots: bool = True
    credentials: dict[str, str] = field(default_factory=dict)


@dataclass
class ScheduleConf:
    name: Literal["none"] = "none"


@dataclass
class RootConf:
    app: AppConf = field(default_factory=AppConf)
    train: TrainConf = field(default_factory=TrainConf)
    dataset: Any = None
    loader: LoaderConf = field(default_factory=LoaderConf)
    model: Any = None
    backend: BackendConf = field(default_factory=BackendConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    schedule: ScheduleConf = field(default_factory=ScheduleConf)
    #: Label category -> value (or list of values).
    labels: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


#: Groups whose schema is chosen by one of their fields.
DISCRIMINATED: dict[str, tuple[str, dict[str, type]]] = {
    "dataset": ("kind", {"ap1": AP1Dataset, "ap2": AP2Dataset}),
    "model": ("arch", {"unet": UNetModel, "transformer": TransformerModel}),
}

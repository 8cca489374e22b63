"""Structured schemas of every config group.

Plain dataclasses: the validator in :mod:`maelstrom_run.config.validate` checks a
composed config against them (unknown keys, types, mandatory values) and reports
the full key path. Groups whose shape depends on a discriminator (``model.arch``,
``dataset.kind``) map each value to its own dataclass.

Valid ranges are written here, once, as field metadata (:func:`bounded` and its shorthands
:func:`count`, :func:`fraction`, :func:`positive`); values with rules of their own name a check
(``metadata={"check": "module:function"}``), imported when first used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

MISSING: Any = "???"


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A field whose number (or every number of its list) must lie in a range: ``>= ge``, ``> gt``,
    ``< lt``; the validator checks it with the key path (null passes: optional fields say so)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("lt", lt)) if v is not None}
    return field(default=default, default_factory=default_factory, metadata={"bounds": bounds})


def count(default: Any = dataclasses.MISSING, minimum: int = 1, **kw: Any) -> Any:
    """A whole number of things, at least ``minimum`` (1 unless said)."""
    return bounded(default, ge=minimum, **kw)


def fraction(default: float) -> Any:
    """A share in [0, 1)."""
    return bounded(default, ge=0, lt=1)


def positive(default: float) -> Any:
    """A number above zero (a rate, a timeout)."""
    return bounded(default, gt=0)


#: Extra input channels a loader can add (``loader.features``): gridded ones, and AP4's location.
Feature = Literal["static_predictors", "coordinates", "leadtime", "location"]

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
    #: For the entry ``maelstrom_run.interop.command:main`` (e.g. an imported MLproject entry
    #: point): the shell command to run; ``{name}`` placeholders take ``params``, shell-quoted.
    command: str | None = None
    #: Values of the command's parameters (``app.params.lr=0.01`` on the command line).
    params: dict[str, str | int | float | bool | None] = field(default_factory=dict)
    #: MLproject type of each parameter, checked when the command runs.
    param_types: dict[str, Literal["string", "float", "int", "path", "uri", "bool"]] = field(
        default_factory=dict
    )


@dataclass
class TrainConf:
    tier: Tier = "tiny"
    epochs: int = count(1, minimum=0)
    batch_size: int = count(16)
    seed: int = count(1234, minimum=0)
    steps_per_epoch: int | None = count(None)


#: Where a dataset's files come from: generated here, local files, or downloaded into the cache.
DataSource = Literal["sample", "files", "remote"]


@dataclass
class RemoteFiles:
    """One set of remote files (a tier of the real dataset), relative to ``remote.url``."""

    #: File names; ``{key}`` placeholders are filled from ``values``, every combination one file.
    pattern: str | None = None
    values: dict[str, list[Any]] = field(default_factory=dict)
    #: Further file names, as they are.
    files: list[str] = field(default_factory=list)
    #: Every object under this prefix of an S3-compatible bucket (listed with ListObjectsV2).
    prefix: str | None = None


@dataclass
class RemoteConf:
    """The public source of a dataset: ``https://...``, ``s3://bucket/prefix`` or a local directory."""

    url: str = MISSING
    #: S3-compatible endpoint for ``s3://`` URLs (path-style requests over HTTPS).
    endpoint: str = "https://s3.amazonaws.com"
    tiers: dict[str, RemoteFiles] = field(default_factory=dict)
    #: Expected checksums by file name, ``sha256:HEX``; files without one are hashed when fetched.
    checksums: dict[str, str] = field(default_factory=dict)


@dataclass
class AP1Size:
    runs: int = count(MISSING)
    leadtimes: int = count(MISSING)
    y: int = count(MISSING)
    x: int = count(MISSING)
    predictors: int = count(MISSING)
    static_predictors: int = count(MISSING)


@dataclass
class AP1Dataset:
    kind: str = "ap1"
    name: str = MISSING
    source: DataSource = "sample"
    #: Directory (or glob) of NetCDF files when ``source: files``.
    path: str | None = None
    tiers: dict[str, AP1Size] = field(default_factory=dict)
    remote: RemoteConf | None = None
    validation_fraction: float = fraction(0.2)


@dataclass
class AP2Size:
    samples: int = count(MISSING)


@dataclass
class AP2Dataset:
    kind: str = "ap2"
    name: str = MISSING
    source: DataSource = "sample"
    #: CSV file with columns ``text`` and ``raining`` when ``source: files``.
    path: str | None = None
    tiers: dict[str, AP2Size] = field(default_factory=dict)
    remote: RemoteConf | None = None
    validation_fraction: float = fraction(0.2)


@dataclass
class AP3Size:
    files: int = count(MISSING)
    columns: int = count(MISSING)
    levels: int = count(137)


@dataclass
class AP5Size:
    months: int = count(MISSING)
    times: int = count(MISSING)
    lat: int = count(MISSING)
    lon: int = count(MISSING)
    #: ``tier-1`` (IFS to 0.1 degree, ``downscaling_tier1_*``) or ``tier-2`` (ERA5 to COSMO-REA6).
    variant: Literal["tier-1", "tier-2"] = "tier-1"


@dataclass
class AP6Size:
    days: int = count(MISSING)
    turbines: int = count(MISSING)
    levels: int = count(MISSING)
    lat: int = count(MISSING)
    lon: int = count(MISSING)


@dataclass
class GriddedDataset:
    """AP3 (radiation), AP5 (downscaling), AP6 (power production): NetCDF files, sizes per tier."""

    kind: str = MISSING
    name: str = MISSING
    source: DataSource = "sample"
    #: Directory (or glob) of NetCDF files when ``source: files``.
    path: str | None = None
    tiers: dict[str, Any] = field(default_factory=dict)
    remote: RemoteConf | None = None
    validation_fraction: float = fraction(0.2)


@dataclass
class AP3Dataset(GriddedDataset):
    tiers: dict[str, AP3Size] = field(default_factory=dict)


@dataclass
class AP5Dataset(GriddedDataset):
    tiers: dict[str, AP5Size] = field(default_factory=dict)
    #: Coarse input fields on the fine grid, (time, y, x) each.
    inputs: list[str] = field(default_factory=lambda: ["t2m_in", "z_in"])
    #: Fields of the fine grid that do not change in time (the target's surface geopotential).
    static: list[str] = field(default_factory=lambda: ["z_tar"])
    #: The fine-grid field to predict.
    target: str = "t2m_tar"
    #: The input that is the target's variable interpolated from the coarse grid (the baseline).
    baseline: str = "t2m_in"


@dataclass
class AP6Dataset(GriddedDataset):
    tiers: dict[str, AP6Size] = field(default_factory=dict)
    #: The wind turbine whose production is forecast (``production_data/wind_turbine_N.nc``).
    turbine: int = count(1)


@dataclass
class AP4Size:
    #: The first ``dates`` of the 105 ENS-10 dates (twice a week), each a file of ``years`` years.
    dates: int = count(MISSING)
    years: int = count(MISSING)
    lat: int = count(MISSING)
    lon: int = count(MISSING)
    levels: list[int] = count(default_factory=lambda: [10, 50, 100, 200, 300, 400, 500, 700, 850, 925, 1000])
    steps: list[int] = count(default_factory=lambda: [0, 24, 48], minimum=0)


@dataclass
class AP4Dataset:
    kind: str = "ap4"
    name: str = MISSING
    source: DataSource = "sample"
    #: Directory of ENS-10 NetCDF files (ensemble mean/std) when ``source: files``.
    path: str | None = None
    tiers: dict[str, AP4Size] = field(default_factory=dict)
    remote: RemoteConf | None = None
    #: What is post-processed: t850, z500 (pressure levels) or t2m (surface).
    target: Literal["t850", "z500", "t2m"] = "t850"
    #: Lead time (hours) of the forecast that is corrected.
    step: int = count(48, minimum=0)
    #: Input variables; null: all of the target's files (z t q w d u v, or the 11 surface ones).
    variables: list[str] | None = None
    #: Share of the years (the last ones) that validate.
    validation_fraction: float = fraction(0.1)


@dataclass
class LoaderLayout:
    """Gridded: where the loader finds things in the files (``maelstrom_run.data.gridded.Layout``);
    the defaults are AP1's."""

    sample_dim: str = "leadtime"
    y_dim: str = "y"
    x_dim: str = "x"
    #: One 4-D variable (sample, y, x, predictor), or a list of 3-D variables stacked as channels.
    predictors: str | list[str] = "predictors"
    #: The variable naming the channels of a 4-D predictors variable.
    predictor_names: str | None = "predictor"
    target: str = "target_mean"
    #: The predictor ``target: difference`` subtracts.
    base: str | None = "air_temperature_2m"
    #: One 3-D variable (y, x, static), a list of 2-D (y, x) variables, or null.
    static: str | list[str] | None = "static_predictors"
    static_names: str | None = "static_predictor"
    #: The lead time variable along the sample dimension (units seconds, hours or days), or null.
    leadtime: str | None = "leadtime"
    latitude: str = "latitude"
    longitude: str = "longitude"


@dataclass
class LoaderConf:
    kind: Literal["gridded", "text"] = MISSING
    #: Worker threads (>= 1).
    threads: int = count(2)
    #: Gridded: fields (one leadtime of one file) in memory at once (>= 1 when NetCDF files are read;
    #: 0 where the loader holds everything, e.g. AP4's memory-mapped arrays).
    prefetch: int = count(2, minimum=0)
    shuffle: bool = True
    normalise: bool = True
    #: Gridded: side of the square patches; null is the whole field.
    patch_size: int | None = count(None)
    #: Gridded: extra input channels, of static_predictors, coordinates, leadtime.
    features: list[Feature] = field(default_factory=list)
    #: Gridded: the predictors to read, by name; null is all of them.
    predictors: list[str] | None = None
    #: Gridded: ``difference`` (target_mean minus the raw forecast) or ``mean`` (target_mean).
    target: Literal["difference", "mean"] = "difference"
    #: Train on arrays written by ``maelstrom data preprocess`` (AP4) instead of reading NetCDF.
    preprocessed: bool = False
    #: Gridded: the files' layout; null is AP1's (``conf/loader/gridded_era5.yaml``: ERA5-style).
    layout: LoaderLayout | None = None


@dataclass
class ModelBase:
    arch: str = MISSING
    name: str = MISSING
    learning_rate: float = positive(1e-3)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = bounded(0.0, ge=0)


@dataclass
class UNetModel(ModelBase):
    filters: int = count(16)
    levels: int = count(2)
    kernel_size: int = count(3)
    dropout: float = fraction(0.0)
    loss: Literal["mae", "mse", "crps"] = "mae"


@dataclass
class MLPModel(ModelBase):
    """A per-grid-point MLP (ENS-10 baseline): inputs plus 3 location features -> mean and spread."""

    hidden: list[int] = count(default_factory=lambda: [128])
    #: Grid points drawn per sample and step; null: every point.
    points: int | None = count(None)
    loss: Literal["crps"] = "crps"


@dataclass
class TransformerModel(ModelBase):
    vocab_size: int = count(4096)
    max_len: int = count(64)
    d_model: int = count(64)
    heads: int = count(4)
    layers: int = count(2)
    ff_dim: int = count(128)
    dropout: float = fraction(0.1)
    #: Directory with pretrained weights (e.g. DeBERTa-v3); nothing is downloaded.
    pretrained: str | None = None


@dataclass
class ColumnModel(ModelBase):
    """AP3: a radiation emulator over the vertical levels of a column (both architectures)."""

    #: Levels the emulator is built for; null: those of the data (a trained emulator fits one grid).
    levels: int | None = count(None)
    #: Weight in the loss of the heating-rate error (as the net flux each layer absorbs, W m-2).
    hr_weight: float = bounded(0.5, ge=0)
    loss: Literal["mse", "mae"] = "mse"


@dataclass
class RNNModel(ColumnModel):
    """AP3 bidirectional RNN: every layer reads the column top-down and bottom-up."""

    cell: Literal["lstm", "gru"] = "lstm"
    units: int = count(32)
    layers: int = count(1)


@dataclass
class CNN1DModel(ColumnModel):
    """AP3 1-D CNN: convolutions along the levels, kernels see ``kernel_size`` neighbouring levels."""

    filters: int = count(32)
    layers: int = count(4)
    kernel_size: int = count(5)


@dataclass
class WGANModel(ModelBase):
    """AP5 Wasserstein GAN: a U-Net generator, a convolutional critic, gradient penalty."""

    filters: int = count(16)
    levels: int = count(2)
    kernel_size: int = count(3)
    dropout: float = fraction(0.0)
    critic_filters: int = count(16)
    #: Critic updates per generator update.
    critic_steps: int = count(2)
    gp_weight: float = bounded(10.0, ge=0)
    #: Weight of the generator's reconstruction error against its adversarial loss.
    recon_weight: float = bounded(100.0, ge=0)
    loss: Literal["mae", "mse"] = "mae"


@dataclass
class RegimeModel(ModelBase):
    """AP6: weather regimes (PCA, then k-means) and a per-turbine production MLP."""

    #: Pressure-level field (``pl_*`` files) and level (hPa) the regimes are found in.
    regime_variable: str = "z"
    regime_level: int = count(500)
    components: int = count(4)
    regimes: int = count(4)
    #: Grid points around the turbine (a square of this side) whose forecast fields are inputs.
    neighbourhood: int = count(3)
    hidden: list[int] = count(default_factory=lambda: [32, 32])
    loss: Literal["mse", "mae"] = "mse"


@dataclass
class Resources:
    queue: str | None = None
    nodes: int = count(1)
    tasks_per_node: int = count(1)
    cpus_per_task: int | None = count(None)
    gpus_per_node: int = count(0, minimum=0)
    #: Memory per node, as sbatch reads it: ``4G``, ``500M``, ``2T``, or megabytes.
    memory: str | int | None = field(
        default=None, metadata={"check": "maelstrom_run.config.units:memory_megabytes"}
    )
    #: Time limit: ``30m``, ``2h``, ``1d12h`` or ``HH:MM:SS``.
    time: str | None = field(
        default=None, metadata={"check": "maelstrom_run.config.units:time_limit_seconds"}
    )
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
    """What every backend has; each kind adds its own fields in a subclass, chosen by ``kind``."""

    name: str = MISSING
    kind: str = MISSING
    #: Jobs of a sweep running (local) or submitted (clusters) at once (>= 1).
    max_parallel: int = count(2)
    #: Tries in all while the target cannot be reached (at least one), and the first wait between
    #: them in seconds (doubling): REST gateways.
    retries: int = count(4)
    retry_delay: float = bounded(1.0, ge=0)
    #: Where run directories live on the target; default ``$MAELSTROM_HOME/runs``.
    workdir: str | None = None
    #: Secret references only, e.g. ``${secret:env:NAME}``.
    credentials: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    environment: Environment = field(default_factory=Environment)
    exclude: list[str] = field(default_factory=list)


@dataclass
class LocalConf(BackendConf):
    kind: str = "local"


@dataclass
class SSHConf:
    """A cluster reached over SSH (the system OpenSSH client): its login node and where runs live there."""

    #: The login node, e.g. ``juwels.fz-juelich.de`` (or a ``Host`` alias of ``~/.ssh/config``).
    host: str = MISSING
    port: int = 22
    #: The user name there (default: ssh's own choice); may be a secret reference.
    user: str | None = None
    #: The private key file (default: ssh's own, and its agent); may be a secret reference to the path.
    identity_file: str | None = None
    #: A secret reference to the private key itself (e.g. ``${secret:env:MANTIK_SSH_PRIVATE_KEY}``):
    #: loaded into a private ssh-agent for this command, never written to disk.
    private_key: str | None = None
    #: The known_hosts file that has the login node's host key (default: ssh's, ``~/.ssh/known_hosts``);
    #: an unknown or changed key is refused (StrictHostKeyChecking=yes).
    known_hosts: str | None = None
    #: Where the run directories live on the cluster: absolute, or relative to the home there.
    workdir: str = "maelstrom/runs"
    #: Seconds the shared connection (ControlMaster) stays open after the last command.
    persist_s: int = 300
    #: More ``-o`` options for ssh, e.g. ``[ProxyJump=gateway.example.org]``.
    options: list[str] = field(default_factory=list)


@dataclass
class SlurmConf(BackendConf):
    kind: str = "slurm"
    #: At most this many tasks per job array (default: the cluster's MaxArraySize).
    max_array_size: int | None = count(None)
    #: More ``#SBATCH`` options, e.g. ``[--exclusive, --mail-type=END]``.
    sbatch_options: list[str] = field(default_factory=list)
    #: Reach the cluster over SSH (its login node); null: the Slurm commands on this machine.
    ssh: SSHConf | None = None


@dataclass
class SlurmRestConf(SlurmConf):
    kind: str = "slurmrest"
    #: The slurmrestd address, e.g. ``http://127.0.0.1:6820``.
    url: str = MISSING
    #: The slurmrestd OpenAPI version in the request paths.
    api_version: str = "v0.0.38"


@dataclass
class UnicoreConf(BackendConf):
    kind: str = "unicore"
    #: The site's UNICORE/X REST base, ``https://HOST:PORT/SITE/rest/core``.
    url: str = MISSING


@dataclass
class FirecrestConf(BackendConf):
    kind: str = "firecrest"
    #: More ``#SBATCH`` options of the batch script FirecREST submits.
    sbatch_options: list[str] = field(default_factory=list)
    #: The FirecREST v2 API, the OIDC token endpoint, and the system name.
    url: str = MISSING
    token_url: str = MISSING
    machine: str = MISSING


#: Backend config schemas by ``kind`` (a backend package of a site adds its own through the
#: ``maelstrom_run.backends`` entry point, its class's ``Conf``).
BACKENDS: dict[str, type[BackendConf]] = {
    "local": LocalConf,
    "slurm": SlurmConf,
    "slurmrest": SlurmRestConf,
    "unicore": UnicoreConf,
    "firecrest": FirecrestConf,
}


@dataclass
class TrackingConf:
    backend: Literal["mlflow"] = "mlflow"
    uri: str | None = None
    experiment: str | None = None
    timeout_s: float = positive(10.0)
    plots: bool = True
    #: Secret references of ``username``, ``password`` or ``token``.
    credentials: dict[str, str] = field(
        default_factory=dict, metadata={"check": "maelstrom_run.tracking.mlflow_run:check_credentials"}
    )
    #: Seconds between MLflow system-metrics samples (CPU, memory, GPU); null: none.
    system_metrics_interval_s: float | None = positive(10.0)


@dataclass
class BenchmarkConf:
    """Compare each firing with a baseline run when it ends (``schedule/benchmark.py``)."""

    #: A run id (maelstrom-run's or MLflow's); null: no comparison.
    baseline: str | None = None
    #: Figures compared: ``time_to_solution_s``, ``phase.<name>.median_s``, ``throughput.samples_per_s``,
    #: ``energy.<sensor>_J``, ``final.<metric>``.
    metrics: list[str] = field(default_factory=lambda: ["time_to_solution_s"])
    #: How much worse than the baseline (a fraction) a figure may be before it counts as a regression.
    tolerance: float = bounded(0.1, ge=0)


@dataclass
class ScheduleConf:
    #: ``none`` runs now; any other entry registers a schedule instead (checked in ``schedule/timing.py``).
    name: str = "none"
    #: Five-field cron expression (minute hour day-of-month month day-of-week) or ``@daily`` etc.
    cron: str | None = None
    #: IANA time zone the cron expression is read in.
    timezone: str = "UTC"
    #: ISO date or date-time (in ``timezone``); default: when the schedule is registered.
    start: str | None = None
    #: No firing after this ISO date or date-time.
    end: str | None = None
    #: Slots missed while no scheduler ran: fire ``none``, the ``last`` one, or ``all``.
    catchup: Literal["none", "last", "all"] = "last"
    #: Firings of this schedule queued or running at once; a slot due beyond it is skipped.
    max_concurrent: int = count(1)
    #: Run this commit (in a separate worktree) instead of the repository's current state.
    commit: str | None = None
    benchmark: BenchmarkConf = field(default_factory=BenchmarkConf)


@dataclass
class RootConf:
    app: AppConf = field(default_factory=AppConf)
    train: TrainConf = field(default_factory=TrainConf)
    dataset: Any = None
    loader: LoaderConf = field(default_factory=LoaderConf)
    model: Any = None
    backend: Any = None
    tracking: TrackingConf = field(default_factory=TrackingConf)
    schedule: ScheduleConf = field(
        default_factory=ScheduleConf, metadata={"check": "maelstrom_run.schedule.timing:check"}
    )
    #: Label category -> value (or list of values).
    labels: dict[str, Any] = field(
        default_factory=dict, metadata={"check": "maelstrom_run.config.taxonomy:check"}
    )
    dry_run: bool = False
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


#: Groups whose schema is chosen by one of their fields.
DISCRIMINATED: dict[str, tuple[str, dict[str, type]]] = {
    "dataset": (
        "kind",
        {
            "ap1": AP1Dataset,
            "ap2": AP2Dataset,
            "ap3": AP3Dataset,
            "ap5": AP5Dataset,
            "ap6": AP6Dataset,
            "ap4": AP4Dataset,
        },
    ),
    "model": (
        "arch",
        {
            "unet": UNetModel,
            "transformer": TransformerModel,
            "mlp": MLPModel,
            "rnn": RNNModel,
            "cnn1d": CNN1DModel,
            "wgan": WGANModel,
            "regimes": RegimeModel,
        },
    ),
    "backend": ("kind", BACKENDS),
}

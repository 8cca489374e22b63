"""The batch script of a job, rendered from the ``backend`` config (Slurm, and gateways that take sbatch).

One renderer for every backend that hands Slurm a script: ``render_batch_script`` is a pure
function of the backend config and where the job's run directory is, so the dry run shows
exactly what is submitted. Secrets never appear in it: a variable whose value is a secret
reference is named in a comment and reaches the job through the submission environment.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..config.schema import BackendConf, Resources
from ..config.secrets import is_reference
from ..config.units import slurm_time, time_limit_seconds

#: Seconds before the time limit at which Slurm sends the job USR1 (checkpoint and requeue).
WARNING_SECONDS = 90


@dataclass(frozen=True)
class Target:
    """Which run a script runs: one run directory, or one line of an array's map file per task.

    Neither: the job's working directory, which a gateway creates and starts the script in (UNICORE).
    """

    run_dir: str | None = None
    map_file: str | None = None
    #: An array's specs, one JSON line per task: the task writes its own ``spec.yaml`` from its line
    #: (a sweep of 5,000 jobs is then three files at submission, not 10,000 files and directories).
    specs_file: str | None = None
    #: ``0-N%throttle`` for an array.
    array: str | None = None


def directives(
    res: Resources, job_name: str, output: str, array: str | None, options: Sequence[str] = ()
) -> list[str]:
    """``#SBATCH`` lines from ``backend.resources`` (only what is set), then ``options``."""
    lines = [f"--job-name={job_name}"]
    if res.queue:
        lines.append(f"--partition={res.queue}")
    lines.append(f"--nodes={res.nodes}")
    lines.append(f"--ntasks-per-node={res.tasks_per_node}")
    if res.cpus_per_task:
        lines.append(f"--cpus-per-task={res.cpus_per_task}")
    if res.gpus_per_node:
        lines.append(f"--gres=gpu:{res.gpus_per_node}")
    if res.memory:
        lines.append(f"--mem={res.memory}")
    if res.time:
        lines.append(f"--time={slurm_time(time_limit_seconds(res.time))}")
    for flag in ("reservation", "constraint", "qos", "account"):
        if value := getattr(res, flag):
            lines.append(f"--{flag}={value}")
    if array:
        lines.append(f"--array={array}")
    lines += [f"--output={output}", "--requeue", f"--signal=B:USR1@{WARNING_SECONDS}"]
    lines += [str(option) for option in options]
    return [f"#SBATCH {shlex.quote(line) if ' ' in line else line}" for line in lines]


def expandable(value: str) -> str:
    """``value`` double-quoted for bash: ``$SCRATCH``/``${HOME}`` still expand on the target, nothing else does."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'


def expandable_word(value: str) -> str:
    """One word of a command line: bare when plain, else :func:`expandable` (variables still expand)."""
    return value if re.fullmatch(r"[\w@%+=:,./-]+", value) else expandable(value)


def worker_python(conf: BackendConf, default: str = "python3") -> str:
    """The interpreter the job runs the worker with: the venv's or container's ``python``, else ``default``."""
    env = conf.environment
    return "python" if env.venv or env.apptainer.image else default


def parallel(conf: BackendConf) -> bool:
    return conf.resources.nodes * conf.resources.tasks_per_node > 1


def render_batch_script(
    conf: BackendConf,
    *,
    job_name: str,
    target: Target,
    output: str,
    code_dir: str,
    python: str,
    steps: bool = False,
    sbatch: bool = True,
) -> str:
    """The complete sbatch script: directives, environment, the worker, post-commands, exit status.

    The worker runs through ``srun`` (as a job step) for several tasks, in a container, and with
    ``steps``: then signals that Slurm sends to a job's steps only reach it too. Without ``sbatch``
    there are no ``#SBATCH`` lines: a gateway that takes the resources apart (UNICORE) runs the script.
    """
    env, apptainer = conf.environment, conf.environment.apptainer
    options = getattr(conf, "sbatch_options", ())
    lines = directives(conf.resources, job_name, output, target.array, options) if sbatch else []
    out = ["#!/bin/bash", *lines, ""]
    out.append("# maelstrom-run job: runs `python -m maelstrom_run.worker RUN_DIR/spec.yaml`")
    if target.map_file:
        out.append(f"MAP={shlex.quote(target.map_file)}")
        out.append('RUN_DIR=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$MAP")')
        out.append(
            '[ -n "$RUN_DIR" ] || { echo "no run for array task $SLURM_ARRAY_TASK_ID in $MAP" >&2; exit 2; }'
        )
        if target.specs_file:
            out.append(f"SPECS={shlex.quote(target.specs_file)}")
            out.append(
                'mkdir -p "$RUN_DIR" && sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$SPECS" >"$RUN_DIR/spec.yaml"'
                ' || { echo "cannot write $RUN_DIR/spec.yaml" >&2; exit 2; }'
            )
    elif target.run_dir is None:
        out.append('RUN_DIR="$PWD"')
    else:
        out.append(f"RUN_DIR={shlex.quote(str(target.run_dir))}")
    out.append('exec >>"$RUN_DIR/stdout.log" 2>>"$RUN_DIR/stderr.log"')
    out.append(f"cd {shlex.quote(code_dir)} || exit 2")
    for module in env.modules:
        out.append(f"module load {shlex.quote(str(module))}")
    if env.venv:
        out.append(f"source {expandable(str(env.venv))}/bin/activate")
    for name, value in sorted(env.variables.items()):
        if is_reference(value):
            out.append(f"# {name}: a secret, passed in the job's environment at submission")
        else:
            out.append(f"export {name}={shlex.quote(str(value))}")
    out += [str(c) for c in env.pre_commands]

    worker = shlex.join([python, "-m", "maelstrom_run.worker"])
    spec = '"$RUN_DIR/spec.yaml"'
    if apptainer.image:
        # the image and its options expand on the compute node (``$USER`` in a path, as Mantik passes them)
        container = [
            "apptainer",
            "exec",
            *map(expandable_word, map(str, apptainer.options)),
            expandable_word(str(apptainer.image)),
        ]
        worker = " ".join([*container, worker])
    if steps or parallel(conf) or apptainer.image:
        # what the user exported (variables, pre-commands) is kept: an InfiniBand MASTER_ADDR, their port
        out += [
            'export MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}',
            "export MASTER_PORT=${MASTER_PORT:-29500}",
            "export WORLD_SIZE=$SLURM_NTASKS",
            # srun (Slurm >= 22.05) does not inherit --cpus-per-task: hand it over unless the user did
            '[ -z "${SLURM_CPUS_PER_TASK:-}" ] || export SRUN_CPUS_PER_TASK=${SRUN_CPUS_PER_TASK:-$SLURM_CPUS_PER_TASK}',
        ]
        inner = worker + ' "$0"'
        command = (
            "srun --kill-on-bad-exit=1 bash -c "
            + shlex.quote(
                "export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID NODE_RANK=$SLURM_NODEID; exec " + inner
            )
            + f" {spec}"
        )
    else:
        command = f"{worker} {spec}"
    out += [
        # USR1 (time limit near, or preemption) and TERM (scancel) go to the worker, which
        # checkpoints and requeues, or closes its MLflow run.
        f"{command} &",
        "worker=$!",
        "trap 'kill -USR1 $worker 2>/dev/null' USR1",
        "trap 'kill -TERM $worker 2>/dev/null' TERM",
        'while :; do wait "$worker"; rc=$?; kill -0 "$worker" 2>/dev/null || { wait "$worker"; rc=$?; break; }; done',
    ]
    out += [str(c) for c in env.post_commands]
    out += ["exit $rc", ""]
    return "\n".join(out)

"""The batch script of a job, rendered from the ``backend`` config (Slurm, and gateways that take sbatch).

One renderer for every backend that hands Slurm a script: ``render_batch_script`` is a pure
function of the backend config and where the job's run directory is, so the dry run shows
exactly what is submitted. Secrets never appear in it: a variable whose value is a secret
reference is named in a comment and reaches the job through the submission environment.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    #: ``0-N%throttle`` for an array.
    array: str | None = None


def directives(conf: Mapping[str, Any], job_name: str, output: str, array: str | None) -> list[str]:
    """``#SBATCH`` lines from ``backend.resources`` (only what is set)."""
    res = conf.get("resources") or {}
    lines = [f"--job-name={job_name}"]
    if res.get("queue"):
        lines.append(f"--partition={res['queue']}")
    lines.append(f"--nodes={int(res.get('nodes') or 1)}")
    lines.append(f"--ntasks-per-node={int(res.get('tasks_per_node') or 1)}")
    if res.get("cpus_per_task"):
        lines.append(f"--cpus-per-task={int(res['cpus_per_task'])}")
    if res.get("gpus_per_node"):
        lines.append(f"--gres=gpu:{int(res['gpus_per_node'])}")
    if res.get("memory"):
        lines.append(f"--mem={res['memory']}")
    if res.get("time"):
        lines.append(f"--time={slurm_time(time_limit_seconds(res['time']))}")
    for key, flag in (
        ("reservation", "reservation"),
        ("constraint", "constraint"),
        ("qos", "qos"),
        ("account", "account"),
    ):
        if res.get(key):
            lines.append(f"--{flag}={res[key]}")
    if array:
        lines.append(f"--array={array}")
    lines += [f"--output={output}", "--requeue", f"--signal=B:USR1@{WARNING_SECONDS}"]
    lines += [str(option) for option in conf.get("sbatch_options") or []]
    return [f"#SBATCH {shlex.quote(line) if ' ' in line else line}" for line in lines]


def expandable(value: str) -> str:
    """``value`` double-quoted for bash: ``$SCRATCH``/``${HOME}`` still expand on the target, nothing else does."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'


def worker_python(conf: Mapping[str, Any], default: str = "python3") -> str:
    """The interpreter the job runs the worker with: the venv's or container's ``python``, else ``default``."""
    env = conf.get("environment") or {}
    return "python" if env.get("venv") or (env.get("apptainer") or {}).get("image") else default


def parallel(conf: Mapping[str, Any]) -> bool:
    res = conf.get("resources") or {}
    return int(res.get("nodes") or 1) * int(res.get("tasks_per_node") or 1) > 1


def render_batch_script(
    conf: Mapping[str, Any],
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
    env = conf.get("environment") or {}
    apptainer = env.get("apptainer") or {}
    out = ["#!/bin/bash", *(directives(conf, job_name, output, target.array) if sbatch else []), ""]
    out.append("# maelstrom-run job: runs `python -m maelstrom_run.worker RUN_DIR/spec.yaml`")
    if target.map_file:
        out.append(f"MAP={shlex.quote(target.map_file)}")
        out.append('RUN_DIR=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" "$MAP")')
        out.append(
            '[ -n "$RUN_DIR" ] || { echo "no run for array task $SLURM_ARRAY_TASK_ID in $MAP" >&2; exit 2; }'
        )
    elif target.run_dir is None:
        out.append('RUN_DIR="$PWD"')
    else:
        out.append(f"RUN_DIR={shlex.quote(str(target.run_dir))}")
    out.append('exec >>"$RUN_DIR/stdout.log" 2>>"$RUN_DIR/stderr.log"')
    out.append(f"cd {shlex.quote(code_dir)} || exit 2")
    for module in env.get("modules") or []:
        out.append(f"module load {shlex.quote(str(module))}")
    if env.get("venv"):
        out.append(f"source {expandable(str(env['venv']))}/bin/activate")
    for name, value in sorted((env.get("variables") or {}).items()):
        if is_reference(value):
            out.append(f"# {name}: a secret, passed in the job's environment at submission")
        else:
            out.append(f"export {name}={shlex.quote(str(value))}")
    out += [str(c) for c in env.get("pre_commands") or []]

    worker = [python, "-m", "maelstrom_run.worker"]
    spec = '"$RUN_DIR/spec.yaml"'
    if apptainer.get("image"):
        worker = [
            "apptainer",
            "exec",
            *map(str, apptainer.get("options") or []),
            str(apptainer["image"]),
            *worker,
        ]
    if steps or parallel(conf) or apptainer.get("image"):
        out += [
            'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
            "export MASTER_PORT=${MASTER_PORT:-29500}",
            "export WORLD_SIZE=$SLURM_NTASKS",
        ]
        inner = shlex.join(worker) + ' "$0"'
        command = (
            "srun --kill-on-bad-exit=1 bash -c "
            + shlex.quote(
                "export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID NODE_RANK=$SLURM_NODEID; exec " + inner
            )
            + f" {spec}"
        )
    else:
        command = f"{shlex.join(worker)} {spec}"
    out += [
        # USR1 (time limit near, or preemption) and TERM (scancel) go to the worker, which
        # checkpoints and requeues, or closes its MLflow run.
        f"{command} &",
        "worker=$!",
        "trap 'kill -USR1 $worker 2>/dev/null' USR1",
        "trap 'kill -TERM $worker 2>/dev/null' TERM",
        'while :; do wait "$worker"; rc=$?; kill -0 "$worker" 2>/dev/null || { wait "$worker"; rc=$?; break; }; done',
    ]
    out += [str(c) for c in env.get("post_commands") or []]
    out += ["exit $rc", ""]
    return "\n".join(out)

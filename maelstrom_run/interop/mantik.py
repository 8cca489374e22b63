"""A Mantik compute-backend config (YAML or JSON) as a maelstrom-run ``backend`` config.

Every key Mantik documents is mapped (:data:`MAPPING` lists where each goes); unknown keys are
reported in the :class:`~maelstrom_run.interop.Report`, never dropped silently, and a value of
the wrong type or form stops the import with its key path.

- ``UnicoreApiUrl`` makes a ``unicore`` backend, ``Firecrest{ApiUrl, TokenUrl, Machine}`` a
  ``firecrest`` one. Credentials become secret references to the variables Mantik reads them
  from (``MANTIK_UNICORE_USERNAME``/``_PASSWORD``, ``MANTIK_FIRECREST_CLIENT_ID``/``_SECRET``) and
  the account is ``MANTIK_COMPUTE_BUDGET_ACCOUNT``, as with Mantik.
- ``Resources.Runtime``: a bare number is seconds (as UNICORE reads it), or ``30min``, ``2h``,
  ``1d``, ``1h30m``, ``HH:MM:SS``; written as ``2h``-style text.
- CPUs: maelstrom-run starts one worker per node (``tasks_per_node: 1``) that gets the node's
  CPUs, which is what UNICORE's ``CPUsPerNode`` asks for and what Mantik hands ``srun`` as
  ``SRUN_CPUS_PER_TASK``. So ``CPUsPerNode`` becomes ``cpus_per_task``; ``TotalCPUs`` alone is
  spread over the nodes (rounded up).
- ``Environment``: ``Apptainer{Path, Type, Options}`` the image and its options (a ``local``
  image is a path relative to the project, staged with the code); ``Python`` (a path or
  ``{Path}``) the venv; the run commands (a string or a list) the login- and compute-node
  pre/post commands; the older ``PreRunCommand``/``PostRunCommand{Command, ExecuteOnLoginNode}``
  likewise.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

from ..config.files import read_mapping
from ..core.errors import ConfigError
from . import Report, literal

#: Mantik key path -> maelstrom-run key path (what the import writes).
MAPPING = {
    "UnicoreApiUrl": "backend.kind: unicore, backend.url",
    "Firecrest.ApiUrl": "backend.kind: firecrest, backend.url",
    "Firecrest.TokenUrl": "backend.token_url",
    "Firecrest.Machine": "backend.machine",
    "SSH.Hostname": "backend.kind: slurm, backend.ssh.host",
    "SSH.Port": "backend.ssh.port",
    "Resources.Queue": "backend.resources.queue",
    "Resources.Runtime": "backend.resources.time",
    "Resources.Nodes": "backend.resources.nodes",
    "Resources.TotalCPUs": "backend.resources.cpus_per_task (over the nodes)",
    "Resources.CPUsPerNode": "backend.resources.cpus_per_task, tasks_per_node: 1",
    "Resources.GPUsPerNode": "backend.resources.gpus_per_node",
    "Resources.MemoryPerNode": "backend.resources.memory",
    "Resources.Reservation": "backend.resources.reservation",
    "Resources.NodeConstraints": "backend.resources.constraint",
    "Resources.QoS": "backend.resources.qos",
    "Environment.Apptainer.Path": "backend.environment.apptainer.image",
    "Environment.Apptainer.Type": "(local: relative to the project; remote: on the cluster)",
    "Environment.Apptainer.Options": "backend.environment.apptainer.options",
    "Environment.Python": "backend.environment.venv",
    "Environment.Variables": "backend.environment.variables",
    "Environment.Modules": "backend.environment.modules",
    "Environment.PreRunCommandOnLoginNode": "backend.environment.login_pre_commands",
    "Environment.PostRunCommandOnLoginNode": "backend.environment.login_post_commands",
    "Environment.PreRunCommandOnComputeNode": "backend.environment.pre_commands",
    "Environment.PostRunCommandOnComputeNode": "backend.environment.post_commands",
    "Environment.PreRunCommand": "backend.environment.(login_)pre_commands",
    "Environment.PostRunCommand": "backend.environment.(login_)post_commands",
    "Exclude": "backend.exclude",
}

CREDENTIALS = {
    "unicore": {
        "username": "${secret:env:MANTIK_UNICORE_USERNAME}",
        "password": "${secret:env:MANTIK_UNICORE_PASSWORD}",
    },
    "firecrest": {
        "client_id": "${secret:env:MANTIK_FIRECREST_CLIENT_ID}",
        "client_secret": "${secret:env:MANTIK_FIRECREST_CLIENT_SECRET}",
    },
}
ACCOUNT = "${oc.env:MANTIK_COMPUTE_BUDGET_ACCOUNT,null}"

_TOP = ("UnicoreApiUrl", "Firecrest", "SSH", "Resources", "Environment", "Exclude")
_SSH = ("Hostname", "Port")
_FIRECREST = ("ApiUrl", "TokenUrl", "Machine")
_RESOURCES = (
    "Queue",
    "Runtime",
    "Nodes",
    "TotalCPUs",
    "CPUsPerNode",
    "GPUsPerNode",
    "MemoryPerNode",
    "Reservation",
    "NodeConstraints",
    "QoS",
)
_RUN_COMMANDS = {
    "PreRunCommandOnLoginNode": "login_pre_commands",
    "PostRunCommandOnLoginNode": "login_post_commands",
    "PreRunCommandOnComputeNode": "pre_commands",
    "PostRunCommandOnComputeNode": "post_commands",
}
_OLD_COMMANDS = {"PreRunCommand": "pre_commands", "PostRunCommand": "post_commands"}
_ENVIRONMENT = ("Apptainer", "Python", "Variables", "Modules", *_RUN_COMMANDS, *_OLD_COMMANDS)
#: A variable's value the shell would change: expansions, quotes, escapes, several words.
_SHELL = re.compile(r"[$`'\"\\\s;&|<>()]")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_RUNTIME_PART = re.compile(r"(\d+)\s*(days?|d|hours?|h|minutes?|mins?|m|seconds?|secs?|s)", re.IGNORECASE)


def read_config(path: Path) -> dict[str, Any]:
    """A config file's mapping: JSON for ``.json``, else YAML (which also reads JSON)."""
    return read_mapping(path, "a mapping of keys (UnicoreApiUrl, Resources, ...)")


class _Values:
    """Typed reads of a source's values; a wrong one stops the import naming its key path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, what: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.source}: {path}: expected {what}, got {value!r}")

    def string(self, value: Any, path: str) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
            raise self.error(path, "a non-empty string", value)
        return str(value)

    def integer(self, value: Any, path: str, minimum: int) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(path, f"a whole number >= {minimum}", value)
        return value

    def strings(self, value: Any, path: str) -> list[str]:
        """A list of strings; one string is a list of one (Mantik accepts both)."""
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, str | int | float) for v in value
        ):
            raise self.error(path, "a string or a list of strings", value)
        return [str(v) for v in value]

    def commands(self, value: Any, path: str) -> list[str]:
        """Shell commands: a string or a list of strings (a number is no command)."""
        items = value if isinstance(value, list) else [value]
        if not items or any(not isinstance(v, str) or not v.strip() for v in items):
            raise self.error(path, "a shell command or a list of them", value)
        return list(items)

    def memory(self, value: Any, path: str) -> str:
        """Memory per node as Slurm's ``--mem`` reads it: a whole number of MB, or with K, M, G, T."""
        text = str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
        m = re.fullmatch(r"(\d+)\s*([KMGT])?(?:i?B)?", text, re.IGNORECASE)
        if not m or int(m.group(1)) <= 0:
            raise self.error(path, "a memory size (e.g. 16G, 512M, or a number of MB)", value)
        return m.group(1) + (m.group(2) or "M").upper()

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(path, "a mapping", value)
        return value


def runtime_seconds(value: Any, path: str, source: str) -> int:
    """Seconds of a Mantik ``Runtime``: a bare number is seconds (UNICORE), else units or a clock."""
    from ..config.units import time_limit_seconds

    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip() if isinstance(value, str) else ""
    if text.isdigit():
        return int(text)
    if text and re.fullmatch(rf"(?:{_RUNTIME_PART.pattern}\s*)+", text, re.IGNORECASE):
        return sum(int(n) * _UNITS[unit[0].lower()] for n, unit in _RUNTIME_PART.findall(text))
    if ":" in text:
        try:
            return time_limit_seconds(text)
        except ConfigError:
            pass
    raise ConfigError(
        f"{source}: {path}: {value!r} is not a run time; write seconds (3600) or 30min, 2h, 1d, 01:30:00"
    )


def duration(seconds: int) -> str:
    """``5400`` -> ``1h30m``: a time limit as ``backend.resources.time`` reads it."""
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _default_exclude() -> list[str]:
    """The shipped local backend's ``exclude`` (what every backend config starts from)."""
    import yaml

    local = Path(__file__).resolve().parents[1] / "conf" / "backend" / "local.yaml"
    return list(yaml.safe_load(local.read_text()).get("exclude") or [])


def to_backend(data: dict[str, Any], name: str, source: str) -> tuple[dict[str, Any], Report]:
    """The backend config (as written to ``conf/backend/NAME.yaml``) of a Mantik backend config."""
    report = Report()
    values = _Values(source)
    for key in data:
        if key not in _TOP:
            report.unknown_key(str(key), list(_TOP))
    backend: dict[str, Any] = {"defaults": ["local", "_self_"], "name": name}
    given = [key for key in ("UnicoreApiUrl", "Firecrest", "SSH") if key in data]
    if len(given) > 1:
        raise ConfigError(f"{source}: give one of UnicoreApiUrl, Firecrest or SSH, not {' and '.join(given)}")
    if "UnicoreApiUrl" in data:
        backend.update(kind="unicore", url=values.string(data["UnicoreApiUrl"], "UnicoreApiUrl"))
        report.mapped.append("UnicoreApiUrl")
    elif "Firecrest" in data:
        firecrest = values.mapping(data["Firecrest"], "Firecrest")
        for key in firecrest:
            if key not in _FIRECREST:
                report.unknown_key(f"Firecrest.{key}", list(_FIRECREST))
        for key, target in (("ApiUrl", "url"), ("Machine", "machine"), ("TokenUrl", "token_url")):
            if key not in firecrest:
                raise ConfigError(
                    f"{source}: Firecrest.{key}: missing; Mantik requires ApiUrl, TokenUrl and Machine"
                )
            backend[target] = values.string(firecrest[key], f"Firecrest.{key}")
            report.mapped.append(f"Firecrest.{key}")
        backend["kind"] = "firecrest"
        backend = {k: backend[k] for k in ("defaults", "name", "kind", "url", "machine", "token_url")}
    elif "SSH" in data:
        backend.update(kind="slurm", ssh=_ssh(data["SSH"], values, report))
    else:
        raise ConfigError(
            f"{source}: give UnicoreApiUrl, a Firecrest section (ApiUrl, TokenUrl, Machine) or an SSH section "
            "(Hostname, Port)"
        )
    backend["max_parallel"] = 8
    if backend["kind"] in CREDENTIALS:
        backend["credentials"] = dict(CREDENTIALS[backend["kind"]])
    backend["resources"] = _resources(data.get("Resources"), values, report)
    environment = _environment(data.get("Environment"), values, report)
    _launch_layout(environment, backend["resources"], report)
    if backend["kind"] == "firecrest" and (
        environment.get("login_pre_commands") or environment.get("login_post_commands")
    ):
        report.notes.append(
            "Environment: FirecREST runs nothing on a login node (Mantik refuses these commands there); "
            "the login_pre_commands/login_post_commands run on the submitting machine only where the backend "
            "supports it"
        )
    if environment:
        backend["environment"] = environment
    if "Exclude" in data:
        backend["exclude"] = [*_default_exclude(), *values.strings(data["Exclude"], "Exclude")]
        report.mapped.append("Exclude")
    if backend["kind"] == "firecrest":
        report.notes.append(
            "backend.workdir: not in a Mantik config; set it to a directory on the cluster for the run "
            "directories (backend.workdir=/scratch/<user>/maelstrom, or in the file)"
        )
    return backend, report


def _ssh(section: Any, values: _Values, report: Report) -> dict[str, Any]:
    """Mantik's ``SSH{Hostname, Port}``: the Slurm backend over SSH. The user comes from
    ``MANTIK_SSH_USERNAME`` and a key from ``MANTIK_SSH_PRIVATE_KEY`` (as with Mantik), as references."""
    import os

    section = values.mapping(section, "SSH")
    for key in section:
        if key not in _SSH:
            report.unknown_key(f"SSH.{key}", list(_SSH))
    if "Hostname" not in section:
        raise ConfigError(f"{values.source}: SSH.Hostname: missing; the login node to submit on")
    ssh: dict[str, Any] = {"host": values.string(section["Hostname"], "SSH.Hostname")}
    report.mapped.append("SSH.Hostname")
    if section.get("Port") is not None:
        port = values.integer(section["Port"], "SSH.Port", 1)
        if port > 65535:
            raise values.error("SSH.Port", "a port number (1-65535)", section["Port"])
        ssh["port"] = port
        report.mapped.append("SSH.Port")
    ssh["user"] = "${secret:env:MANTIK_SSH_USERNAME}"
    if os.environ.get("MANTIK_SSH_PRIVATE_KEY"):
        ssh["private_key"] = "${secret:env:MANTIK_SSH_PRIVATE_KEY}"
        report.notes.append(
            "SSH: the key is MANTIK_SSH_PRIVATE_KEY (the key itself, loaded into a private ssh-agent, never "
            "written to disk)"
        )
    else:
        report.notes.append(
            "SSH: ssh's own keys and agent log in (MANTIK_SSH_PRIVATE_KEY is not set); or set "
            "backend.ssh.identity_file. A password (MANTIK_SSH_PASSWORD) is never used: ssh runs in batch mode"
        )
    report.notes.append(
        f"SSH: the host key of {ssh['host']} must be in ~/.ssh/known_hosts (or backend.ssh.known_hosts); the run "
        "directories go to ~/maelstrom/runs there (backend.ssh.workdir)"
    )
    return ssh


def _resources(section: Any, values: _Values, report: Report) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if section is None:
        report.notes.append("Resources: none given; the queue and limits are the cluster's defaults")
        resources["account"] = ACCOUNT
        return resources
    section = values.mapping(section, "Resources")
    for key in section:
        if key not in _RESOURCES:
            report.unknown_key(f"Resources.{key}", list(_RESOURCES))
    if "MemoryPerNode" in section:
        resources["memory"] = values.memory(section["MemoryPerNode"], "Resources.MemoryPerNode")
        report.mapped.append("Resources.MemoryPerNode")
    for key, target in (
        ("Queue", "queue"),
        ("Reservation", "reservation"),
        ("NodeConstraints", "constraint"),
        ("QoS", "qos"),
    ):
        if key in section:
            resources[target] = values.string(section[key], f"Resources.{key}")
            report.mapped.append(f"Resources.{key}")
    if "Runtime" in section:
        seconds = runtime_seconds(section["Runtime"], "Resources.Runtime", values.source)
        if seconds:
            resources["time"] = duration(seconds)
        else:
            report.notes.append("Resources.Runtime: 0 sets no limit; the queue's default limit applies")
        report.mapped.append("Resources.Runtime")
    nodes = None
    if "Nodes" in section:
        nodes = resources["nodes"] = values.integer(section["Nodes"], "Resources.Nodes", 1)
        report.mapped.append("Resources.Nodes")
    per_node = total = None
    if "CPUsPerNode" in section:
        per_node = values.integer(section["CPUsPerNode"], "Resources.CPUsPerNode", 1)
        report.mapped.append("Resources.CPUsPerNode")
    if "TotalCPUs" in section:
        total = values.integer(section["TotalCPUs"], "Resources.TotalCPUs", 1)
        report.mapped.append("Resources.TotalCPUs")
    if per_node is not None:
        resources.update(tasks_per_node=1, cpus_per_task=per_node)
        if total is not None and total != (nodes or 1) * per_node:
            report.notes.append(
                f"Resources.TotalCPUs: {total} is not Nodes x CPUsPerNode = {(nodes or 1) * per_node}; "
                f"CPUsPerNode ({per_node} per node) kept"
            )
    elif total is not None:
        spread = math.ceil(total / (nodes or 1))
        resources.update(tasks_per_node=1, cpus_per_task=spread)
        if spread * (nodes or 1) != total:
            report.notes.append(
                f"Resources.TotalCPUs: {total} CPUs on {nodes or 1} node(s) rounded up to {spread} per node"
            )
    if "GPUsPerNode" in section:
        resources["gpus_per_node"] = values.integer(section["GPUsPerNode"], "Resources.GPUsPerNode", 0)
        report.mapped.append("Resources.GPUsPerNode")
    resources["account"] = ACCOUNT
    order = ("queue", "time", "nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node", "memory")
    return {k: resources[k] for k in (*order, *resources) if k in resources}


def _launch_layout(env: dict[str, Any], resources: dict[str, Any], report: Report) -> None:
    """Tasks and CPUs the user's ``Environment.Variables`` give ``srun`` become the allocation's, so the
    worker launch (``srun`` in the batch script) starts as many tasks as Mantik's job would; the
    variables themselves stay exported, as the user wrote them."""
    variables = env.get("variables") or {}
    tasks = variables.get("SLURM_NTASKS_PER_NODE")
    cpus = variables.get("SRUN_CPUS_PER_TASK") or variables.get("SLURM_CPUS_PER_TASK")
    if tasks is not None and str(tasks).isdigit() and int(tasks) >= 1:
        per_node = resources.get("cpus_per_task")
        resources["tasks_per_node"] = int(tasks)
        if cpus is None and per_node:
            resources["cpus_per_task"] = max(1, per_node // int(tasks))
        report.notes.append(
            f"Environment.Variables.SLURM_NTASKS_PER_NODE: {tasks} tasks per node (backend.resources."
            f"tasks_per_node), each with {resources.get('cpus_per_task') or 'the default'} CPUs"
        )
    if cpus is not None and str(cpus).isdigit() and int(cpus) >= 1:
        resources["cpus_per_task"] = int(cpus)


def _environment(section: Any, values: _Values, report: Report) -> dict[str, Any]:
    env: dict[str, Any] = {}
    if section is None:
        return env
    section = values.mapping(section, "Environment")
    for key in section:
        if key not in _ENVIRONMENT:
            report.unknown_key(f"Environment.{key}", list(_ENVIRONMENT))
    if "Apptainer" in section and "Python" in section:
        raise ConfigError(
            f"{values.source}: Environment: Apptainer and Python both given; Mantik runs one of them, keep one"
        )
    if "Modules" in section:
        env["modules"] = values.strings(section["Modules"], "Environment.Modules")
        report.mapped.append("Environment.Modules")
    if "Python" in section:
        python = section["Python"]
        if isinstance(python, dict):
            for key in python:
                if key != "Path":
                    report.unknown_key(f"Environment.Python.{key}", ["Path"])
            if "Path" not in python:
                raise ConfigError(
                    f"{values.source}: Environment.Python.Path: missing; the venv's absolute path"
                )
            python = python["Path"]
        env["venv"] = literal(values.string(python, "Environment.Python"))
        report.mapped.append("Environment.Python")
    if "Apptainer" in section:
        env["apptainer"] = _apptainer(section["Apptainer"], values, report)
    if "Variables" in section:
        variables = values.mapping(section["Variables"], "Environment.Variables")
        for key, value in variables.items():
            if not re.fullmatch(r"[A-Za-z_]\w*", str(key)):
                raise ConfigError(f"{values.source}: Environment.Variables.{key}: not a variable name")
            text = values.string(value, f"Environment.Variables.{key}")
            if _SHELL.search(text):
                # Mantik's job has `export NAME=VALUE` as written: the shell on the compute node
                # expands and unquotes it, so it goes there verbatim (a pre-command), not as text
                env.setdefault("pre_commands", []).append(literal(f"export {key}={text}"))
                report.notes.append(
                    f"Environment.Variables.{key}: shell syntax; exported as written by a pre-command on the "
                    "compute node (as Mantik does), so it expands there"
                )
            else:
                env.setdefault("variables", {})[str(key)] = text
        report.mapped.append("Environment.Variables")
    for key, target in _RUN_COMMANDS.items():
        if key in section:
            commands = values.commands(section[key], f"Environment.{key}")
            env.setdefault(target, []).extend(literal(c) for c in commands)
            report.mapped.append(f"Environment.{key}")
    for key, target in _OLD_COMMANDS.items():
        if key in section:
            command = values.mapping(section[key], f"Environment.{key}")
            for sub in command:
                if sub not in ("Command", "ExecuteOnLoginNode"):
                    report.unknown_key(f"Environment.{key}.{sub}", ["Command", "ExecuteOnLoginNode"])
            if "Command" not in command:
                raise ConfigError(f"{values.source}: Environment.{key}.Command: missing")
            on_login = command.get("ExecuteOnLoginNode", False)
            if not isinstance(on_login, bool):
                raise values.error(f"Environment.{key}.ExecuteOnLoginNode", "true or false", on_login)
            (text,) = values.commands(command["Command"], f"Environment.{key}.Command")
            env.setdefault(f"login_{target}" if on_login else target, []).append(literal(text))
            report.mapped.append(f"Environment.{key}")
    order = ("modules", "venv", "apptainer", "variables", "pre_commands", "post_commands")
    return {k: env[k] for k in (*order, *env) if k in env}


def _apptainer(section: Any, values: _Values, report: Report) -> dict[str, Any]:
    section = values.mapping(section, "Environment.Apptainer")
    known = ["Path", "Type", "Options"]
    for key in section:
        if key not in known:
            report.unknown_key(f"Environment.Apptainer.{key}", known)
    if "Path" not in section:
        raise ConfigError(f"{values.source}: Environment.Apptainer.Path: missing; the image (.sif) to run in")
    image = values.string(section["Path"], "Environment.Apptainer.Path")
    report.mapped.append("Environment.Apptainer.Path")
    kind = values.string(section.get("Type", "local"), "Environment.Apptainer.Type").lower()
    if kind not in ("local", "remote"):
        raise ConfigError(
            f"{values.source}: Environment.Apptainer.Type: {section['Type']!r} is not one of 'local', 'remote'"
        )
    if "Type" in section:
        report.mapped.append("Environment.Apptainer.Type")
    if kind == "remote" and not image.startswith("/"):
        raise ConfigError(
            f"{values.source}: Environment.Apptainer.Path: a remote image needs an absolute path on the cluster, "
            f"got {image!r}"
        )
    if kind == "local":
        if image.startswith("/"):
            report.notes.append(
                f"Environment.Apptainer.Path: the local image {image} is not uploaded; copy it to the cluster and "
                "set backend.environment.apptainer.image to its path there"
            )
        else:
            report.notes.append(
                f"Environment.Apptainer.Path: the local image {image} goes with the staged code when it lies in "
                "the project and is neither git-ignored nor excluded"
            )
    out: dict[str, Any] = {"image": literal(image)}
    if "Options" in section:
        options = values.strings(section["Options"], "Environment.Apptainer.Options")
        out["options"] = [literal(o) for option in options for o in shlex.split(option)]
        report.mapped.append("Environment.Apptainer.Options")
    return out

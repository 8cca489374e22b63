"""Submit RunSpecs to their backends, recorded in the registry first; optionally wait."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..backends import get_backend
from ..config import ConfigError
from . import monitor
from .registry import Registry, RunRecord
from .spec import RunSpec


def submit(
    specs: Sequence[RunSpec], *, wait: bool, follow: bool = False, registry: Registry | None = None
) -> list[RunRecord]:
    """Record, submit (one ``submit_many`` per backend) and, with ``wait``, block until done."""
    registry = registry or Registry()
    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.backend.get("name", "local"), []).append(spec)
    backends = {name: get_backend(group[0].backend) for name, group in groups.items()}
    registry.add_runs(list(specs))
    for name, group in groups.items():
        try:
            job_ids = backends[name].submit_many(group)
        except OSError as exc:
            _mark_failed(registry, group, f"submission failed: {exc}")
            where = exc.filename or group[0].run_dir
            raise ConfigError(
                f"run directory {where}: {exc.strerror or exc}; set backend.workdir or MAELSTROM_HOME "
                "to a writable directory"
            ) from None
        except Exception as exc:
            _mark_failed(registry, group, f"submission failed: {exc}")
            raise
        now = time.time()
        for spec, job_id in zip(group, job_ids, strict=True):
            registry.update(spec.run_id, job_id=job_id, submitted=now, message=None)
    run_ids = [s.run_id for s in specs]
    if wait:
        return monitor.wait(registry, run_ids, follow=follow)
    return [registry.get(r) for r in run_ids]


def _mark_failed(registry: Registry, specs: Sequence[RunSpec], message: str) -> None:
    for spec in specs:
        registry.update(spec.run_id, state="failed", message=message.splitlines()[0], ended=time.time())


def print_dry_run(spec: RunSpec) -> None:
    """Show exactly what ``submit`` would send (the backend's render) and submit nothing."""
    from rich.syntax import Syntax

    from ..console import make_console

    rendered = get_backend(spec.backend).render(spec)
    console = make_console()
    console.rule(f"[bold]dry run[/bold]: {spec.run_id} on {spec.backend.get('name')}")
    console.print(Syntax(rendered.text, "bash", word_wrap=True))
    console.print("[bold]files staged:[/bold]")
    for name in rendered.files:
        console.print(f"  {name}")
    console.print(f"config hash {spec.config_hash}; nothing was submitted")

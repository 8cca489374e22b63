"""maelstrom: manage runs, data, schedules and labels.

    maelstrom runs list [--sweep ID] [--state STATE] [--limit N]
    maelstrom runs status ID | --sweep ID
    maelstrom runs info ID
    maelstrom runs logs ID [--stderr] [--follow]
    maelstrom runs cancel ID | --sweep ID
    maelstrom runs watch SWEEP_ID | RUN_ID
    maelstrom runs resume SWEEP_ID
    maelstrom runs sync ID | --sweep ID [--timeout S]
    maelstrom runs download ID [DEST]
    maelstrom runs rerun ID [--current-code] [--no-wait]
    maelstrom runs rerun --sweep ID --failed [--current-code] [--no-wait]
    maelstrom runs freeze ID | --sweep ID [--name NAME] [--out DIR] [--config-dir DIR]
    maelstrom runs env ID
    maelstrom runs export ID FILE.tar.gz | runs import FILE.tar.gz

    maelstrom data get DATASET [--tier T] | data cache list|clear | data preprocess app=ap4
    maelstrom schedules list|show|pause|resume|remove|next|export ... | scheduler run [--once]
    maelstrom labels list
    maelstrom search --label K=V [--text WORDS]
    maelstrom recommend --label K=V | app=APP
    maelstrom import mantik MLproject [BACKEND_CONFIG] [--name NAME] [--out conf]
    maelstrom export mlproject app=APP [KEY=VALUE ...] [--out DIR]
    maelstrom bench compare RUN_OR_SWEEP ... [--baseline RUN] | bench report RUN_OR_SWEEP
    maelstrom bench history SCHEDULE_ID

IDs may be abbreviated to a unique prefix. State lives in $MAELSTROM_HOME (default ~/.maelstrom).
Each command has its own --help. Tab completion (commands, options, run, sweep and schedule ids):
    eval "$(register-python-argcomplete maelstrom)"    (in ~/.bashrc; zsh: autoload bashcompinit first)
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from .errors import guarded


class Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line (sub-commands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def parser() -> argparse.ArgumentParser:
    root = Parser(prog="maelstrom", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = root.add_subparsers(dest="group", required=True)
    from . import bench, data, interop, labels, runs, schedules

    data.add_commands(groups)
    schedules.add_commands(groups)
    labels.add_commands(groups)
    interop.add_commands(groups)
    runs.add_commands(groups)
    bench.add_commands(groups)
    return root


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    root = parser()
    from .completion import complete

    complete(root)  # a Tab in the shell: answer and exit
    args = root.parse_args(argv)
    sys.exit(guarded("maelstrom", lambda: args.func(args), argv))


if __name__ == "__main__":
    main()

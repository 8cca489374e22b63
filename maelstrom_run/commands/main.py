"""``maelstrom``: manage runs, data, schedules and labels.

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

    maelstrom data get DATASET [--tier T] | data cache list|clear | data preprocess app=ap4
    maelstrom schedules list|show|pause|resume|remove|next|export ... | scheduler run [--once]
    maelstrom labels list
    maelstrom search --label K=V [--text WORDS]
    maelstrom recommend --label K=V | app=APP
    maelstrom import mantik MLproject [BACKEND_CONFIG] [--name NAME] [--out conf]
    maelstrom export mlproject app=APP [KEY=VALUE ...] [--out DIR]

IDs may be abbreviated to a unique prefix. State lives in $MAELSTROM_HOME (default ~/.maelstrom).
Each command has its own --help.
"""

from __future__ import annotations

import argparse
import sys

from .errors import explain


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="maelstrom", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    groups = root.add_subparsers(dest="group", required=True)
    from . import data, interop, labels, runs, schedules

    data.add_commands(groups)
    schedules.add_commands(groups)
    labels.add_commands(groups)
    interop.add_commands(groups)
    runs.add_commands(groups)
    return root


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        code = args.func(args)
    except KeyboardInterrupt:
        print("maelstrom: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # noqa: BLE001 - user errors become one line; bugs keep their traceback
        known = explain(exc)
        if known is None:
            raise
        code, message = known
        print(f"maelstrom: error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()

"""The command layer: every argparse parser, ``cmd_*`` function and terminal output of ``maelstrom-run``
and ``maelstrom``. It is the top layer and may import everything below it; nothing below imports it."""

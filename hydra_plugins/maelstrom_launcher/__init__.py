"""Hydra launcher plugin ``hydra/launcher=maelstrom`` (the default launcher of maelstrom-run)."""

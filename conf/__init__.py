"""maelstrom-run's shipped config groups (a package so Hydra finds them as pkg://maelstrom_run.conf)."""

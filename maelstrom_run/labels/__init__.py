"""Search and recommendation over apps, experiments and runs by their labels (the taxonomy itself is
config, :mod:`maelstrom_run.config.taxonomy`). Imports core, config and launch (the registry)."""

"""maelstrom-run: declarative, Hydra-based runs of weather & climate ML, tracked in MLflow."""

__version__ = "0.1.0"

"""RunSpec, run registry, submission and re-runs."""

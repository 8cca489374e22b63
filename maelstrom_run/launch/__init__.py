"""Orchestration: building RunSpecs, the run registry, submission, sweeps, monitoring, re-runs and
resume; returns data, prints nothing. Imports core, config, backends and tracking."""

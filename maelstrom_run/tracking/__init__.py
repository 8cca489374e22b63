"""MLflow wiring, the phase timer and the run context handed to apps. Imports core and config."""

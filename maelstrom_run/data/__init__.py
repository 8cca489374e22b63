"""Datasets of the applications: generated sample data in the layout of the real ones."""

"""Schedules: cron firings of a registered run template, restart-safe, with catch-up policies."""

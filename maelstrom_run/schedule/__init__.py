"""Schedules: cron firings of a registered run template, restart-safe, with catch-up policies.
Imports core, config and launch; its checks (:mod:`.timing`) stand on core alone."""

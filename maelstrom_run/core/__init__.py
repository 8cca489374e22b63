"""The bottom layer every other package stands on: errors, the RunSpec, run directories and the
worker's result, job states and their one reconcile rule, the retry policy, and where state lives.

It imports nothing else of maelstrom_run (and only the standard library and PyYAML).
"""

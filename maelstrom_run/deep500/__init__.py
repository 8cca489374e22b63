"""The Deep500 timer API for jobs in which the MAELSTROM fork of Deep500 is not installed.

This directory (not the package itself) is put on a job's path: the worker appends it to its own
``sys.path`` (after site-packages) and to ``PYTHONPATH`` for the commands it starts. Its ``deep500``
package hands over to a real installation whenever there is one, so it never shadows the fork.
It imports nothing of maelstrom-run: ``maelstrom_run.tracking.deep500_capture`` observes it (and the
real fork) from outside.
"""

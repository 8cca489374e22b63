"""Utilities of the stand-in Deep500: the timers."""

"""A stand-in for an installed Deep500 (tests only): marks itself so a test can tell it was used."""

INSTALLED = True

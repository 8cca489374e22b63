"""A module beside the script, imported by it as the script's directory is on sys.path."""


def scale(value: int) -> int:
    return value * 3

"""What every stage checks its settings with."""


def is_positive_int(value: object) -> bool:
    """A size or a count: an int of at least 1 (not a bool, not a float like 2.5 from an override)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1

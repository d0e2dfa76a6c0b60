"""The field checks the commands' constructors and the format-1 reader share: the same
exceptions and messages on every node (a rejected entry stores them)."""

from __future__ import annotations


def check_str(name: str, value: object, *, optional: bool = False, empty: bool = False) -> None:
    """TypeError unless ``value`` is a string (or None when ``optional``); ValueError if
    empty (unless ``empty``)."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    if not empty and not value:
        raise ValueError(f"{name} must not be empty")


def check_bool(name: str, value: object) -> None:
    """TypeError unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool")


def check_int(name: str, value: object, *, optional: bool = False, minimum: int = 0) -> None:
    """TypeError unless ``value`` is an int (not a bool; None allowed when ``optional``);
    ValueError below ``minimum``."""
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")

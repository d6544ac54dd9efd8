"""Ranges and choices of settings, declared once beside the settings themselves.

A setting's bound is attached to its type with :data:`typing.Annotated`, for
example ``epochs: Annotated[int, Range(1, 10_000, "The number of epochs")]``.
Validation, the widgets' spin boxes and drop-downs, and the CLI's choices all
read the bound from there, so no limit is written twice.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any

from napari_bloodcells.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """A numeric interval a setting must lie in.

    Attributes
    ----------
    low, high : float
        The ends of the interval.
    subject : str
        Starts the error sentence, e.g. ``"The number of epochs"``.
    low_open, high_open : bool
        Whether ``low`` / ``high`` themselves are excluded.
    multiple : int
        Values must be multiples of this (1: any).
    hint : str
        Appended to the error sentence, e.g. ``", e.g. 0.2"``.
    """

    low: float
    high: float
    subject: str
    low_open: bool = False
    high_open: bool = False
    multiple: int = 1
    hint: str = ""

    def contains(self, value: float) -> bool:
        """Whether ``value`` satisfies the bound."""
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below and (self.multiple == 1 or value % self.multiple == 0)

    def describe(self) -> str:
        """The allowed values in words: ``"1 to 10000"``, ``"above 0 and at most 1"``."""
        low, high = _number(self.low), _number(self.high)
        if self.multiple > 1:
            return f"a multiple of {self.multiple} between {low} and {high}"
        if self.low_open and self.high_open:
            return f"between {low} and {high}"
        if self.low_open:
            return f"above {low} and at most {high}"
        if math.isinf(self.high):
            return f"at least {low}"
        return f"{low} to {high}"

    def check(self, value: float) -> None:
        """Raise :class:`ConfigError` with one sentence unless ``value`` is allowed."""
        if not self.contains(value):
            raise ConfigError(f"{self.subject} ({value}) must be {self.describe()}{self.hint}.")

    @property
    def minimum(self) -> float:
        """The smallest value a widget may offer (``low`` itself unless excluded)."""
        return self.low

    @property
    def maximum(self) -> float:
        """The largest value a widget may offer."""
        return self.high


@dataclass(frozen=True)
class OneOf:
    """A setting that takes one of a few named values."""

    options: tuple[str, ...]
    subject: str

    def check(self, value: str) -> None:
        """Raise :class:`ConfigError` with one sentence unless ``value`` is an option."""
        if value not in self.options:
            raise ConfigError(
                f"{self.subject} ({value!r}) must be one of: {', '.join(self.options)}."
            )


Bound = Range | OneOf


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def bound_of(cls: type, name: str) -> Bound:
    """The :class:`Range` or :class:`OneOf` declared on field ``name`` of dataclass ``cls``."""
    hints = typing.get_type_hints(cls, include_extras=True)
    for meta in getattr(hints[name], "__metadata__", ()):
        if isinstance(meta, (Range, OneOf)):
            return meta
    raise KeyError(f"{cls.__name__}.{name} declares no bound")


def range_of(cls: type, name: str) -> Range:
    """The :class:`Range` of field ``name``; raises ``TypeError`` for a choice."""
    bound = bound_of(cls, name)
    if not isinstance(bound, Range):
        raise TypeError(f"{cls.__name__}.{name} is a choice, not a range")
    return bound


def options_of(cls: type, name: str) -> tuple[str, ...]:
    """The options of choice field ``name``; raises ``TypeError`` for a range."""
    bound = bound_of(cls, name)
    if not isinstance(bound, OneOf):
        raise TypeError(f"{cls.__name__}.{name} is a range, not a choice")
    return bound.options


def check_bounds(settings: Any) -> None:
    """Check every bounded field of the dataclass instance ``settings``, in field order.

    Raises
    ------
    ConfigError
        For the first field out of its bound, in one sentence.
    """
    hints = typing.get_type_hints(type(settings), include_extras=True)
    for f in dataclasses.fields(settings):
        for meta in getattr(hints[f.name], "__metadata__", ()):
            if isinstance(meta, (Range, OneOf)):
                meta.check(getattr(settings, f.name))


MAGNIFICATION_RANGE = Range(
    0.05,
    20.0,
    "The scale",
    hint="; use a factor below 1 when cells look larger than in the training images",
)
"""Magnifications (image resize factors) that segmentation and training accept."""

"""Typed settings: a component's settings are one dataclass, each field with its range or allowed values beside it.

    @dataclass
    class DiTArgs(Settings):
        depth: int = setting(4, ge=1)
        mlp_ratio: float = setting(4.0, gt=0)
        attention_layout: AttentionLayout = AttentionLayout.full   # an Enum field: its members are the values

        def check(self, at: str = "") -> None:                      # rules between fields, naming them
            if self.hidden_size % self.num_heads:
                raise SoraError(f"{at}hidden_size=... must divide by {at}num_heads=...")

The dataclass is both the component's constructor argument (built in Python, `__post_init__` checks it) and a
node of the config schema (sora/config/schema.py composes them; `check_settings` checks a composed config with
each key's full name). A range lives on its field, so renaming a key carries its check along.
"""

import dataclasses
import enum
import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, Iterable

from sora.errors import SoraError

# ---------------------------------------------------------------------------------------------------------------
# Declaring a field
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """What a number (or each number of a list) must be: bounds, and or a set of names read when checked."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Callable[[], Iterable[str]] | None = None  # read at check time: a registry may grow after import
    each: bool = False  # a list: every element is checked
    must: str | None = None  # what the message says the value must be, in place of the bounds

    def problem(self, value) -> str | None:
        """None when `value` is allowed, else what it must be."""
        want = self._problem(value)
        return None if want is None else (self.must or want)

    def _problem(self, value) -> str | None:
        values = list(value) if self.each else [value]
        for v in values:
            if self.choices is not None:
                names = sorted(self.choices())
                if v not in names:
                    return f"one of {', '.join(names)}"
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return "a number"
            if (self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt) or \
                    (self.le is not None and v > self.le) or (self.lt is not None and v >= self.lt):
                return ("each " if self.each else "") + self.describe()
        return None

    def describe(self) -> str:
        low = f"[{self.ge}" if self.ge is not None else f"({self.gt}" if self.gt is not None else None
        high = f"{self.le}]" if self.le is not None else f"{self.lt})" if self.lt is not None else None
        if low and high:
            return f"in {low}, {high}"
        if low:
            return f">= {self.ge}" if self.ge is not None else f"> {self.gt}"
        return f"<= {self.le}" if self.le is not None else f"< {self.lt}"


UNBOUNDED = Range()  # a number any value of its type may take (a seed, a fixed scale): said, not forgotten


def setting(default: Any = MISSING, *, ge=None, gt=None, le=None, lt=None, choices=None, each: bool = False,
            factory: Callable[[], Any] | None = None, unbounded: bool = False, must: str | None = None):
    """A dataclass field with its range: `setting(4, ge=1)`, `setting("euler", choices=lambda: SAMPLERS)`,
    `setting(factory=lambda: [1, 2, 2], ge=1, each=True)`; `unbounded=True` says a number has no limits; `must`
    words the message for a rule the bounds only part of (a list's length, checked in `check`)."""
    bounds = Range(ge, gt, le, lt, choices, each, must)
    if bounds == Range(each=each, must=must) and not unbounded:
        raise TypeError("setting() needs a range (ge, gt, le, lt or choices), or unbounded=True")
    meta = {"range": bounds}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def range_of(f: dataclasses.Field) -> Range | None:
    return f.metadata.get("range")


# ---------------------------------------------------------------------------------------------------------------
# Checking
# ---------------------------------------------------------------------------------------------------------------


def nested_settings(tp) -> type | None:
    """The dataclass inside a field type (Optional[X] -> X), or None for a leaf."""
    for arg in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def check_settings(node, schema: type, at: str = "") -> None:
    """Every field's range, then the schema's own rules between fields, recursively; `node` is a dataclass
    instance or a config node read by attribute. Null values (an optional setting left off) are not checked."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        value = getattr(node, f.name)
        if value is None:
            continue
        sub = nested_settings(hints[f.name])
        if sub is not None:
            check_settings(value, sub, f"{at}{f.name}.")
            continue
        bounds = range_of(f)
        if bounds is not None and (want := bounds.problem(value)) is not None:
            shown = list(value) if bounds.each else value
            raise SoraError(f"{at}{f.name} must be {want}, got {shown}")
    if hasattr(schema, "check"):
        schema.check(node, at)


class Settings:
    """Base of every settings dataclass: enum fields given as strings become their members, then all is checked."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            tp = hints[f.name]
            for arg in (tp, *typing.get_args(tp)):
                if isinstance(arg, type) and issubclass(arg, enum.Enum):
                    value = getattr(self, f.name)
                    if value is not None and not isinstance(value, arg):
                        try:
                            setattr(self, f.name, arg(value))
                        except ValueError:
                            names = ", ".join(m.value for m in arg)
                            raise SoraError(f"{f.name} must be one of {names}, got {value!r}") from None
        check_settings(self, type(self))

    def check(self, at: str = "") -> None:
        """Rules between this dataclass's fields; `at` prefixes the names in a message (e.g. "dit.")."""

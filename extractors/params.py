"""Declared parameters: what a backbone or a text encoder accepts, of which type, with which allowed values or range,
and its default. A declaration sits where the backbone or encoder is defined; this module imports nothing heavy, so
the workflow checks a configuration against the declarations while it plans (a backbone's are read from its source,
:mod:`extractors.backbones.declared`).

    params = {"mode": choice("clean", ("clean", "reference")), "fps": number(25.0, above=0),
              "decode_short_side": integer(128, minimum=1, nullable=True), "weights": local_file()}
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass


class ParamError(ValueError):
    """A parameter that is not declared, or whose value is not one its declaration allows."""


@dataclass(frozen=True)
class Param:
    kind: str  # one of VOCABULARY's names; any: known by name only
    default: object = None
    choices: tuple = ()
    minimum: float | None = None
    above: float | None = None  # an exclusive minimum
    maximum: float | None = None
    nullable: bool = False
    length: int | None = None  # numbers: how many
    containing: str | None = None  # strings: what each must hold

    def allowed(self) -> str:
        """The allowed values in words, e.g. ``one of clean, reference`` or ``a number > 0 or null``."""
        if self.kind == "choice":
            words = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.kind in ("number", "integer", "numbers"):
            bounds = [f">= {self.minimum:g}" if self.minimum is not None else "",
                      f"> {self.above:g}" if self.above is not None else "",
                      f"<= {self.maximum:g}" if self.maximum is not None else ""]
            noun = {"number": "a number", "integer": "an integer",
                    "numbers": f"a list of {self.length or 'some'} numbers"}[self.kind]
            words = " ".join([noun, " and ".join(b for b in bounds if b)]).strip()
        elif self.kind == "any":
            return "any value"
        elif self.kind == "strings":
            words = "a string or a list of strings" + (f", each with {self.containing!r}" if self.containing else "")
        else:
            words = {"flag": "true or false", "string": "a string", "local_file": "a file path"}[self.kind]
        return f"{words} or null" if self.nullable else words

    def accepts(self, value) -> bool:
        if self.kind == "any":
            return True
        if value is None:
            return self.nullable
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "flag":
            return isinstance(value, bool)
        if self.kind == "string":
            return isinstance(value, str)
        if self.kind == "local_file":
            return isinstance(value, (str, os.PathLike)) and bool(str(value))
        if self.kind == "strings":
            items = [value] if isinstance(value, str) else value
            return (isinstance(items, (list, tuple)) and len(items) > 0
                    and all(isinstance(t, str) and (self.containing or "") in t for t in items))
        if self.kind == "numbers":
            return (isinstance(value, (list, tuple)) and (self.length is None or len(value) == self.length)
                    and all(self._in_range(v) for v in value))
        if self.kind == "integer" and not (isinstance(value, int) or _is_whole(value)):
            return False
        return self._in_range(value)

    def _in_range(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return False
        return ((self.minimum is None or value >= self.minimum) and (self.above is None or value > self.above)
                and (self.maximum is None or value <= self.maximum))


def _is_whole(value) -> bool:
    return isinstance(value, float) and value.is_integer()


def choice(default, choices) -> Param:
    return Param("choice", default, choices=tuple(choices), nullable=default is None)


def number(default=None, *, minimum=None, above=None, maximum=None, nullable=False) -> Param:
    return Param("number", default, minimum=minimum, above=above, maximum=maximum,
                 nullable=nullable or default is None)


def integer(default=None, *, minimum=None, above=None, maximum=None, nullable=False) -> Param:
    return Param("integer", default, minimum=minimum, above=above, maximum=maximum,
                 nullable=nullable or default is None)


def flag(default: bool) -> Param:
    return Param("flag", default)


def string(default=None) -> Param:
    return Param("string", default, nullable=default is None)


def local_file(default=None) -> Param:
    """A local file or folder; null until given."""
    return Param("local_file", default, nullable=True)


def numbers(default=None, *, length=None, minimum=None, above=None) -> Param:
    return Param("numbers", default, minimum=minimum, above=above, length=length, nullable=default is None)


def strings(default=None, *, containing=None) -> Param:
    """One string or a list of them, each holding ``containing`` when given."""
    return Param("strings", default, containing=containing, nullable=default is None)


VOCABULARY = {f.__name__: f for f in (choice, number, integer, flag, string, local_file, numbers, strings)}


def defaults(declared: dict[str, Param]) -> dict:
    return {key: p.default for key, p in declared.items()}


def check_values(declared: dict[str, Param], given: dict, where: str, owner: str) -> None:
    """Every given parameter is declared and has a value its declaration allows; else one line naming
    ``<where>.<key>`` and the known keys or the allowed values. ``owner`` (e.g. ``backbone 'c3d'``) is named too."""
    for key, value in given.items():
        if key not in declared:
            raise ParamError(f"{where}.{key}: {owner} has no parameter {key!r}; known: {', '.join(sorted(declared))}")
        if not declared[key].accepts(value):
            raise ParamError(f"{where}.{key}: {value!r} is not {declared[key].allowed()} ({owner})")

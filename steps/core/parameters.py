"""Parameter declarations: a name, a default, a type that checks the value, a help line.

Each parameter is declared once, beside the piece that uses it (a saliency algorithm declares
its own); `steps/options.py` gathers them into the step CLIs, and MLproject's parameter blocks
and the docs' parameter tables are generated from them (`python -m steps.project_files`). The
types know nothing of the command line: `convert` returns the value or raises `ParameterError`
saying what is accepted (the CLI adds the parameter's name); floats must be finite.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from steps.core.errors import ParameterError


class ParamType:
    """How a parameter's text becomes its value. `convert(value, param, ctx)` takes the text
    (or an already converted value) and returns the value, or raises `ParameterError`; `param`
    and `ctx` are the CLI's and only passed on."""

    name = "text"
    #: The parameter's type in MLproject: `string`, `int` or `float`.
    mlproject_type = "string"

    def convert(self, value, param=None, ctx=None):
        return value if value is None else str(value)

    def accepts(self) -> str:
        """What the type accepts, for the docs' tables ("" when the help line says it)."""
        return ""

    def fail(self, message: str, param=None, ctx=None):
        raise ParameterError(message)


TEXT = ParamType()


class Choice(ParamType):
    name = "choice"

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)

    def convert(self, value, param=None, ctx=None):
        if value not in self.choices:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, self.choices))}.")
        return value

    def accepts(self) -> str:
        return " / ".join(f"`{choice}`" for choice in self.choices)


class Boolean(ParamType):
    name = "boolean"
    TRUE = ("1", "true", "t", "yes", "y", "on")
    FALSE = ("0", "false", "f", "no", "n", "off")

    def convert(self, value, param=None, ctx=None):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in self.TRUE or text in self.FALSE:
            return text in self.TRUE
        self.fail(f"{value!r} is not a valid boolean; give true or false.")

    def accepts(self) -> str:
        return "`true` / `false`"


BOOLEAN = Boolean()


class NumberRange(ParamType):
    """A number of `kind` between `min` and `max` (either None for no bound; excluded with
    `min_open`, `max_open`)."""

    kind: type = float
    kind_name = "float"

    def __init__(self, min: float | None = None, max: float | None = None,
                 min_open: bool = False, max_open: bool = False) -> None:
        self.min, self.max, self.min_open, self.max_open = min, max, min_open, max_open

    def convert(self, value, param=None, ctx=None):
        try:
            number = self.kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a valid {self.kind_name}.")
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number")
        if (self.min is not None and (number < self.min or (self.min_open and number == self.min))) \
                or (self.max is not None and (number > self.max
                                              or (self.max_open and number == self.max))):
            self.fail(f"{number} is not in the range {self.accepts()}.")
        return number

    def accepts(self) -> str:
        low = "" if self.min is None else f"{self.min}{'<' if self.min_open else '<='}"
        high = "" if self.max is None else f"{'<' if self.max_open else '<='}{self.max}"
        if self.max is None and self.min is not None:
            return f"x{'>' if self.min_open else '>='}{self.min}"
        return f"{low}x{high}" if low or high else ""


class Integer(NumberRange):
    name = "integer"
    kind = int
    kind_name = "integer"
    mlproject_type = "int"


class Float(NumberRange):
    """A finite float in a range: NaN and infinity pass every comparison, so are refused first."""

    name = "float"
    mlproject_type = "float"


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    type: ParamType
    help: str
    required: bool = False


class NumberList(ParamType):
    """Comma-separated numbers such as `64,32`, each at least `minimum` (above it, with
    `min_open`; any finite number when `minimum` is None), optionally of fixed length; with `allow_empty`, an empty value is the empty
    tuple."""

    name = "number_list"
    kind: type = float
    kind_name = "numbers"

    def __init__(self, minimum: float | None = 0, length: int | None = None, allow_empty: bool = False,
                 min_open: bool = False):
        self.minimum = minimum
        self.length = length
        self.allow_empty = allow_empty
        self.min_open = min_open

    def describe(self) -> str:
        what = (f"finite {self.kind_name}" if self.minimum is None else
                f"{self.kind_name} {'>' if self.min_open else '>='} {self.minimum}")
        count = f"{self.length} comma-separated" if self.length else "comma-separated"
        example = ",".join(["2"] * (self.length or 2))
        return f"{count} {what}, e.g. {example}"

    def convert(self, value, param=None, ctx=None):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        if not text and self.allow_empty:
            return ()
        try:
            numbers = tuple(self.kind(part) for part in text.split(","))
        except ValueError:
            self.fail(f"{value!r} is not {self.describe()}", param, ctx)
        below = [n for n in numbers if not math.isfinite(n) or (self.minimum is not None and (
            n < self.minimum or (self.min_open and n == self.minimum)))]
        if below or (self.length and len(numbers) != self.length):
            self.fail(f"{value!r} is not {self.describe()}", param, ctx)
        return numbers


class IntList(NumberList):
    """Comma-separated integers such as `64,32` (see `NumberList`)."""

    name = "int_list"
    kind = int
    kind_name = "integers"


class ItemList(ParamType):
    """A tuple of items read from text (`items`); empty text means none, the empty tuple."""

    def convert(self, value, param=None, ctx=None):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        return self.items(text, param, ctx) if text else ()

    def items(self, text: str, param=None, ctx=None) -> tuple:
        raise NotImplementedError


class TextList(ItemList):
    """Comma-separated non-empty strings (e.g. image IDs such as `cat/001.png,808`), or a JSON
    list of strings for items that hold commas (`["a,b.png","c.png"]`); empty means none."""

    name = "text_list"

    def items(self, text, param, ctx):
        try:
            return text_items(text)
        except ValueError as error:
            self.fail(str(error), param, ctx)


def text_items(text: str) -> tuple[str, ...]:
    """The strings of a TextList value (as `as_param` writes a tuple of them); ValueError for
    a malformed one."""
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            parts = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{text!r} is not a JSON list ({error.msg} at character "
                             f"{error.pos})") from None
        if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"{text!r} is not a JSON list of strings")
        parts = tuple(parts)
    else:
        parts = tuple(part.strip() for part in text.split(","))
    if not all(parts):
        raise ValueError(f"{text!r} has an empty item; give comma-separated values or a JSON "
                         "list")
    return parts


def as_param(value) -> str:
    """A converted value back in the string form MLproject parameters and MLflow params take."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ";".join(map(as_param, value))  # a list of lists, such as colours
    if isinstance(value, tuple):
        texts = [str(item) for item in value]
        if any("," in text for text in texts) or (texts and texts[0].startswith("[")):
            return json.dumps(texts)  # as TextList reads it back
        return ",".join(texts)
    return str(value)


def values_of(declarations, values: Mapping[str, Any]) -> dict[str, str]:
    """The given declarations' values, as `-P` / MLflow param strings."""
    return {d.name: as_param(values[d.name]) for d in declarations}

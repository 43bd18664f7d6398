"""Parameter declarations: a name, a default, a type that checks the value, a help line.

Each parameter is declared once, beside the piece that uses it (a saliency algorithm declares
its own); `steps/options.py` gathers them into the step CLIs and MLproject must agree with them
(tests/test_project_files.py). A `Parameter` is also a click option decorator. The types reject
bad values with a message naming what they accept; floats must be finite.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class Parameter:
    name: str
    default: Any
    type: Any
    help: str
    required: bool = False

    def __call__(self, func):
        """Apply as a click option `--name` whose value arrives as `name`."""
        return click.option(f"--{self.name}", self.name, default=self.default, type=self.type,
                            help=self.help, required=self.required,
                            show_default=not self.required)(func)


class Float(click.FloatRange):
    """A finite float in a range: NaN and infinity pass every comparison, so are refused first."""

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


class NumberList(click.ParamType):
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

    def convert(self, value, param, ctx):
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


class ItemList(click.ParamType):
    """A tuple of items read from text (`items`); empty text means none, the empty tuple."""

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        return self.items(text, param, ctx) if text else ()

    def items(self, text: str, param, ctx) -> tuple:
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

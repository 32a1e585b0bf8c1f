"""Method options: what a method declares next to its hooks (``Method.options``) and how a value is
parsed (the CLI), defaulted and validated (``QuantSettings``).

An ``Option`` is one setting read by one method (and the methods that inherit from it): its name
(the ``QuantSettings`` keyword and, with dashes, the ``--flag``), default, help line, the parser the
command line uses, and a check that returns an error line for a bad value. The CLI's flags and
``--help`` groups are generated from these declarations (``masq_jax.cli``), so a method with a new
option touches ``methods/`` only.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from masq_jax.errors import SettingsError

Check = Callable[[Any], "str | None"]  # a bad value -> the one error line (None: fine)


@dataclasses.dataclass(frozen=True)
class Option:
    """One method option (see the module docstring)."""

    name: str
    default: Any
    help: str
    parse: Callable[[str], Any] | None = None  # argparse ``type`` (None: the string as is)
    check: Check | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def validate(self, value: Any) -> None:
        """``SettingsError`` with one line when ``value`` is not allowed."""
        if self.choices is not None and value not in self.choices:
            raise SettingsError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
        message = self.check(value) if self.check is not None else None
        if message:
            raise SettingsError(message)

    def add_to(self, group) -> None:
        """Add this option's ``--flag`` to an argparse parser or group (default None: "not given")."""
        group.add_argument(self.flag, type=self.parse, choices=self.choices, default=None,
                           help=f"{self.help} (default {self.default})")


def words_or_number(*words: str) -> Callable[[str], Any]:
    """An argparse type: one of ``words`` or a number."""
    def parse(text: str):
        if text in words:
            return text
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is neither {' nor '.join(map(repr, words))} nor a number") from None
    return parse


def number(what: str) -> Callable[[str], float]:
    """An argparse type: a float, with ``what`` in the error line."""
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({what})") from None
    return parse

"""The rules K-means parameters follow, in one table, for the estimator, the engine and the command line.

Each checks a value with `check(name, value)`; a failure is a ParameterError (a ValueError) whose
str() is the Python API's message, and whose `option_message(flag)` is the command line's words
for the same rule (the command line turns it into its `error:` line).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """whole: an integer (not a bool) >= low; real: a finite real number >= low. also: other
    accepted values (scikit-learn's "auto")."""

    kind: str
    low: int
    also: tuple[str, ...] = ()


RULES = {
    "n_clusters": Rule("whole", 1),  # the upper bound, the number of samples, is the data's
    "n_init": Rule("whole", 1, also=("auto",)),
    "max_iter": Rule("whole", 1),
    "tol": Rule("real", 0),  # relative to the data's variance: 0 means "until nothing moves"
    "seed": Rule("whole", 0),  # numpy's generators take no negative seed
    "repeats": Rule("whole", 1),  # the command line's fits per K, seeds seed, seed+1, ...
}


class ParameterError(ValueError):
    """A parameter value that breaks its rule; str() names the parameter as the Python API does."""

    def __init__(self, name: str, value, rule: Rule):
        self.name, self.value, self.rule = name, value, rule
        super().__init__(self._words(name, repr(value)))

    def _words(self, name: str, shown: str) -> str:
        if self.rule.kind == "real":
            return f"{name} must be a finite number >= {self.rule.low}, got {shown}"
        other = "".join(f" or {value!r}" for value in self.rule.also)
        return f"{name} must be an integer >= {self.rule.low}{other}, got {shown}"

    def option_message(self, option: str) -> str:
        """The same rule in the command line's words, e.g. "--max-iter must be at least 1, got 0"."""
        if self.rule.kind == "real":
            return self._words(option, str(self.value))
        return f"{option} must be at least {self.rule.low}, got {self.value}"


def check(name: str, value) -> None:
    """ParameterError unless value follows RULES[name]."""
    rule = RULES[name]
    if isinstance(value, str) and value in rule.also:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(name, value, rule)
    if rule.kind == "whole" and not isinstance(value, numbers.Integral):
        raise ParameterError(name, value, rule)
    if not math.isfinite(value) or value < rule.low:
        raise ParameterError(name, value, rule)

"""Checks of target rows against the simulator's variables: names known, constraint values of the right type.

A constraint value that does not fit its variable (`age == '1; DROP TABLE ...'`, `medicaid_enrolled == 7`,
an enum compared with a name it does not have) would otherwise fail only inside the kernel, once per chunk
and retry. Each check returns problems as text so the caller lists every one of them in a single message.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Collection, Iterable

__all__ = ["VariableType", "VariableTypeLookup", "variable_types_of", "unknown_variable_problems",
           "constraint_value_problems", "target_value_problems"]


@dataclass(frozen=True)
class VariableType:
    """What a constraint on a variable may compare with: `kind` is number, bool, enum or string."""

    kind: str
    possible_values: tuple[str, ...] = ()


VariableTypeLookup = Callable[[str], "VariableType | None"]
"""Variable name -> its type (None: unknown, left to the known-variables check)."""

_EQUALITY = frozenset({"==", "!="})


def variable_types_of(system: Any) -> VariableTypeLookup:
    """A lookup over a policyengine-core tax-benefit system (`variable.value_type`, `possible_values`)."""

    def lookup(name: str) -> VariableType | None:
        variable = system.variables.get(name)
        if variable is None:
            return None
        value_type = variable.value_type
        if value_type is bool:
            return VariableType("bool")
        if value_type in (int, float):
            return VariableType("number")
        possible = getattr(variable, "possible_values", None)
        if possible is not None:
            return VariableType("enum", tuple(member.name for member in possible))
        return VariableType("string")

    return lookup


def unknown_variable_problems(used: dict[str, set[int]], known: Collection[str]) -> list[str]:
    """The variables of `used` (variable -> target ids using it) `known` lacks, each with the closest known names."""
    unknown = {v: ids for v, ids in sorted(used.items()) if v not in known}
    if not unknown:
        return []
    names = sorted(known)
    listing = "; ".join(f"{v} (target_ids {sorted(ids)[:5]}{'...' if len(ids) > 5 else ''}{_closest(v, names)})"
                        for v, ids in unknown.items())
    return [f"{len(unknown)} variable(s) are unknown to policyengine-us: {listing}. Fix the names, mark those "
            "targets inactive (active = 0), or leave them out with the variables filter"]


def _closest(variable: str, names: list[str]) -> str:
    close = difflib.get_close_matches(variable, names, n=3, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""


def constraint_value_problems(constraints: Iterable[tuple[int, Any]], variable_type: VariableTypeLookup) -> list[str]:
    """One problem per (stratum id, Constraint) whose operation or value does not fit the variable's type."""
    problems = []
    seen: set[tuple[int, str]] = set()
    for stratum_id, c in constraints:
        vtype = variable_type(c.variable)
        if vtype is None or (stratum_id, c.label) in seen:
            continue
        seen.add((stratum_id, c.label))
        why = _misfit(c.operation, c.value, vtype)
        if why:
            problems.append(f"stratum_id {stratum_id}: constraint {c.variable} {c.operation} {c.value!r}: {why}")
    return problems


def _misfit(operation: str, value: Any, vtype: VariableType) -> str | None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if vtype.kind == "number" and not (number and math.isfinite(value)):
        return "the variable is numeric; give a finite number"
    if vtype.kind == "bool" and not (isinstance(value, bool) or (number and value in (0, 1))):
        return "the variable is boolean; give True or False"
    if vtype.kind == "enum":
        if operation not in _EQUALITY:
            return f"the variable is an enum; use == or != (not {operation})"
        if not isinstance(value, str) or value not in vtype.possible_values:
            shown = ", ".join(vtype.possible_values[:12]) + (", ..." if len(vtype.possible_values) > 12 else "")
            return f"the variable is an enum; give one of {shown}"
    if vtype.kind == "string" and operation not in _EQUALITY:
        return f"the variable holds text; use == or != (not {operation})"
    return None


def target_value_problems(rows: Iterable[Any]) -> list[str]:
    """Target values that are not finite after uprating (a NaN or inf target would poison every fit)."""
    return [f"target_id {r.target_id}: value {r.source_value!r} uprated to {r.value!r}, not a finite number; "
            "check the uprating series or mark the target inactive"
            for r in rows if not math.isfinite(r.value)]

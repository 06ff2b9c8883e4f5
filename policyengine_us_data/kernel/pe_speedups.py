"""Cut policyengine-us's per-simulation fixed cost without changing a single result.

Profiling one chunk's simulation in a warm process (policyengine-us 2.68.0) showed about two
thirds of its time in `policyengine_us.tools.pinned_tbs._get_pinned_tbs`: the NY CTC and EITC
formulas recompute federal credits under pinned parameters and deep-copy the whole parameter
tree to do it. policyengine-us caches that copy per tax-benefit-system *object*, but every
`Microsimulation` gets a fresh system object sharing one parameter tree, so the cache never
hits across simulations and each chunk pays the copy again.

`install()` keys the cache by what the pinned copy depends on: the parameter tree and what the
variables compute with (class, formulas, neutralisation; not the variable objects, which every
branch clones). Keying by object ids missed on every chunk and kept each miss's copy forever:
about 1 GB leaked per 500-column chunk. The tests in tests/integration/test_pe_speedups.py check,
with the real policyengine-us, that every target variable comes out bit-for-bit identical with and
without it, and that a second chunk adds no copy and keeps no simulation alive. It applies only to the version it was checked against; any other version runs unpatched.
"""

from __future__ import annotations

import logging
import weakref
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable

LOG = logging.getLogger(__name__)
CHECKED_VERSIONS = ("2.68.0",)
_STATE: dict[str, Any] = {"installed": False, "original": None}
_PINNED: dict[tuple[str, int, int], tuple[weakref.ref, Any]] = {}
MAX_PINNED = 12  # three pins x (baseline + each reform's system), with room to spare


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


def _variables_key(variables: dict) -> int:
    """What a system's variables compute with: each one's class and formulas, by qualified name, and
    whether it is neutralised.

    Not object ids: policyengine-core clones every variable when it clones a system (each simulation
    branch does), and policyengine-us re-creates its parameter-driven structural reforms (new classes,
    same code, e.g. `mi_surtax`) for every simulation. Those are the same definitions on the same
    parameter tree (the other half of the key), so they share one pinned copy.
    """
    return hash(tuple(
        (name, _qualified(type(v)), bool(getattr(v, "is_neutralized", False)),
         tuple(map(_qualified, getattr(v, "formulas", {}).values())))
        for name, v in variables.items()
    ))


def _evict() -> None:
    """Drop entries whose parameter tree is gone, then the oldest beyond MAX_PINNED (each holds a full copy
    of the parameter tree, ~100 MB)."""
    for key in [key for key, (ref, _) in _PINNED.items() if ref() is None]:
        del _PINNED[key]
    while len(_PINNED) >= MAX_PINNED:
        del _PINNED[next(iter(_PINNED))]


def _pinned_by_parameters(original: Callable) -> Callable:
    def get_pinned(base_tbs, pin_name, pin_fn):
        parameters = base_tbs.parameters
        key = (pin_name, id(parameters), _variables_key(base_tbs.variables))
        entry = _PINNED.get(key)
        if entry is not None and entry[0]() is parameters:
            return entry[1]
        pinned = original(base_tbs, pin_name, pin_fn)
        # the clone copied the base's `simulation` attribute: do not let the cache keep that simulation alive
        pinned.__dict__.pop("simulation", None)
        _evict()
        _PINNED[key] = (weakref.ref(parameters), pinned)
        return pinned

    get_pinned.__wrapped__ = original
    return get_pinned


def install() -> bool:
    """Patch the pinned-system cache once per process; True when the patch is active."""
    if _STATE["installed"]:
        return True
    try:
        if version("policyengine-us") not in CHECKED_VERSIONS:
            LOG.info("policyengine-us %s not checked for the pinned-system speedup; running unpatched",
                     version("policyengine-us"))
            return False
        from policyengine_us.tools import pinned_tbs
    except (PackageNotFoundError, ImportError):
        return False
    original = getattr(pinned_tbs, "_get_pinned_tbs", None)
    if original is None:
        return False
    _STATE["original"] = original
    pinned_tbs._get_pinned_tbs = _pinned_by_parameters(original)
    _STATE["installed"] = True
    return True


def uninstall() -> None:
    """Restore policyengine-us's own cache (tests compare both)."""
    if not _STATE["installed"]:
        return
    from policyengine_us.tools import pinned_tbs

    pinned_tbs._get_pinned_tbs = _STATE["original"]
    _PINNED.clear()
    _STATE["installed"] = False

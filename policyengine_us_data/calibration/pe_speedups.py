"""Cut policyengine-us's per-simulation fixed cost without changing a single result.

Profiling one chunk's simulation in a warm process (policyengine-us 2.68.0) showed about two
thirds of its time in `policyengine_us.tools.pinned_tbs._get_pinned_tbs`: the NY CTC and EITC
formulas recompute federal credits under pinned parameters and deep-copy the whole parameter
tree to do it. policyengine-us caches that copy per tax-benefit-system *object*, but every
`Microsimulation` gets a fresh system object sharing one parameter tree, so the cache never
hits across simulations and each chunk pays the copy again.

`install()` keys the cache by what the pinned copy depends on: the parameter tree and the
variable objects. The tests in tests/integration/test_pe_speedups.py check, with the real
policyengine-us, that every target variable comes out bit-for-bit identical with and without
it. It applies only to the version it was checked against; any other version runs unpatched.
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


def _policy_key(base_tbs) -> tuple[int, int]:
    """What a pinned copy depends on: the parameter tree and the variable objects (a reform that
    neutralises a variable rebinds it to a new object; per-simulation systems reuse the objects)."""
    return id(base_tbs.parameters), hash(tuple(map(id, base_tbs.variables.values())))


def _pinned_by_parameters(original: Callable) -> Callable:
    def get_pinned(base_tbs, pin_name, pin_fn):
        parameters = base_tbs.parameters
        key = (pin_name, *_policy_key(base_tbs))
        entry = _PINNED.get(key)
        if entry is not None and entry[0]() is parameters:
            return entry[1]
        pinned = original(base_tbs, pin_name, pin_fn)
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

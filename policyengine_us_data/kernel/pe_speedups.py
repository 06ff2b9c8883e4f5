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

A cache miss (once per process) still cost a whole-tree copy: ~30,000 nodes and ~110,000 parameters
cloned, each node's values rebuilt at the simulation's instant, and a collector pass over millions of
new objects, 10-20 s in every worker that meets a New York household. The pin rewrites one subtree
(`PIN_SUBTREES`), so the miss copies only that subtree and the nodes on its path; every other subtree
is the base tree's own, shared read-only with its warm per-instant caches.

`first_county_in_state` (the county a household without one is placed in) rebuilt its state-to-county
table by scanning every county for every state on each call, ~1 s per chunk; the patched formula asks
the original once per state it has not seen and keeps the answer.
"""

from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Callable

import numpy as np

LOG = logging.getLogger(__name__)
CHECKED_VERSIONS = ("2.68.0",)
_STATE: dict[str, Any] = {"installed": False, "original": None, "first_county": None}
FIRST_COUNTY = "first_county_in_state"
_PINNED: dict[tuple[str, int, int], tuple[weakref.ref, Any]] = {}
MAX_PINNED = 12  # three pins x (baseline + each reform's system), with room to spare
# The parameter subtrees each pin function of policyengine-us 2.68.0 rewrites (tools/pinned_tbs.py); a pin
# not listed here gets policyengine-us's whole-tree copy.
PIN_SUBTREES: dict[str, tuple[tuple[str, ...], ...]] = {"ny_pre_tcja_ctc": (("gov", "irs", "credits", "ctc"),)}


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
    """Drop entries whose parameter tree is gone, then the oldest beyond MAX_PINNED (a pin not in PIN_SUBTREES
    holds a full copy of the parameter tree, ~100 MB)."""
    for key in [key for key, (ref, _) in _PINNED.items() if ref() is None]:
        del _PINNED[key]
    while len(_PINNED) >= MAX_PINNED:
        del _PINNED[next(iter(_PINNED))]


def _path_copy(node, paths: tuple[tuple[str, ...], ...], deep_clone: Callable):
    """`node` copied along `paths`: each path's last node is cloned deeply, the nodes leading to it are shallow
    copies, and every other child is the original object (its parent stays the original node)."""
    if any(not path for path in paths):
        return deep_clone(node)
    from policyengine_core.commons.misc import empty_clone  # how core's own clone() starts a node

    copied = empty_clone(node)
    copied.__dict__ = node.__dict__.copy()
    copied.children = dict(node.children)
    copied._at_instant_cache = {}
    for name in {path[0] for path in paths}:
        child = _path_copy(node.children[name], tuple(p[1:] for p in paths if p[0] == name), deep_clone)
        child.parent = copied
        copied.children[name] = child
        setattr(copied, name, child)
    return copied


@contextmanager
def _sharing_clone(root, paths: tuple[tuple[str, ...], ...]):
    """While open, cloning `root` (and only it) gives `_path_copy(root, paths)` instead of a whole-tree copy."""
    node_class = type(root)
    deep_clone = node_class.clone
    own = "clone" in vars(node_class)

    def clone(node):
        return _path_copy(node, paths, deep_clone) if node is root else deep_clone(node)

    node_class.clone = clone
    try:
        yield
    finally:
        if own:
            node_class.clone = deep_clone
        else:
            del node_class.clone


def _pinned_by_parameters(original: Callable) -> Callable:
    def get_pinned(base_tbs, pin_name, pin_fn):
        parameters = base_tbs.parameters
        key = (pin_name, id(parameters), _variables_key(base_tbs.variables))
        entry = _PINNED.get(key)
        if entry is not None and entry[0]() is parameters:
            return entry[1]
        paths = PIN_SUBTREES.get(pin_name)
        if paths is None:
            pinned = original(base_tbs, pin_name, pin_fn)
        else:
            with _sharing_clone(parameters, paths):
                pinned = original(base_tbs, pin_name, pin_fn)
        # the clone copied the base's `simulation` attribute: do not let the cache keep that simulation alive
        pinned.__dict__.pop("simulation", None)
        _evict()
        _PINNED[key] = (weakref.ref(parameters), pinned)
        return pinned

    get_pinned.__wrapped__ = original
    return get_pinned


def _first_county_by_state(original: Callable) -> Callable:
    """`original` (a formula of the household's state alone) asked once per state, its answers kept."""
    table: dict[str, Any] = {}

    def formula(household, period, parameters):
        states = np.asarray(household("state_code_str", period))
        if not len(states):
            return original(lambda *_: states, period, parameters)
        unique, inverse = np.unique(states, return_inverse=True)
        unseen = [state for state in unique.tolist() if state not in table]
        if unseen:
            table.update(zip(unseen, original(lambda *_: np.array(unseen), period, parameters)))
        return np.array([table[state] for state in unique.tolist()], dtype=object)[inverse.reshape(-1)]

    formula.__wrapped__ = original
    return formula


def _patch_first_county(system) -> None:
    formulas = system.variables[FIRST_COUNTY].formulas
    _STATE["first_county"] = dict(formulas)
    for start, original in list(formulas.items()):
        formulas[start] = _first_county_by_state(original)


def _unpatch_first_county(system) -> None:
    if _STATE["first_county"] is not None:
        system.variables[FIRST_COUNTY].formulas.update(_STATE["first_county"])
        _STATE["first_county"] = None


def install() -> bool:
    """Patch the pinned-system cache and `first_county_in_state` once per process; True when active."""
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
    from policyengine_us.system import system

    _patch_first_county(system)
    _STATE["installed"] = True
    return True


def shared_neutralised_system(system, variable: str):
    """`system` with `variable` neutralised, reading `system`'s own parameter tree (None when not installed).

    policyengine-core's reform copies the whole tree (~30 s at warm-up, ~100 MB per reform row), and each copy
    then builds its own per-instant values for every state it meets. Neutralising rebinds one entry of a
    private variable registry and never touches parameters, so policyengine-us's copy-on-write shared policy
    (`share_spm_policy`, the one its own simulations use) is enough.
    """
    if not _STATE["installed"]:
        return None
    from policyengine_us.spm import share_spm_policy

    shared = share_spm_policy(system)
    shared.neutralize_variable(variable)
    return shared


def uninstall() -> None:
    """Restore policyengine-us's own cache and formula (tests compare both)."""
    if not _STATE["installed"]:
        return
    from policyengine_us.tools import pinned_tbs

    from policyengine_us.system import system

    pinned_tbs._get_pinned_tbs = _STATE["original"]
    _unpatch_first_county(system)
    _PINNED.clear()
    _STATE["installed"] = False

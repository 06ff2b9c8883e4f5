"""A pinned system's parameter tree copies only the subtree its pin rewrites (pe_speedups._sharing_clone).

Hermetic: a small policyengine-core tree, no policyengine-us. The real pin is checked against
policyengine-us's own whole-tree copy in tests/integration/test_pe_speedups.py.
"""

from __future__ import annotations

import pytest
from policyengine_core.parameters import Parameter, ParameterNode
from policyengine_core.periods import instant

from policyengine_us_data.kernel import pe_speedups


def tree() -> ParameterNode:
    return ParameterNode("root", data={
        "gov": {
            "credits": {
                "ctc": {"amount": {"values": {"2017-01-01": 1000, "2018-01-01": 2000}}},
                "eitc": {"max": {"values": {"2017-01-01": 500}}},
            },
            "states": {"ny": {"rate": {"values": {"2017-01-01": 0.05}}}},
        },
    })


def pinned_copy(root: ParameterNode) -> ParameterNode:
    with pe_speedups._sharing_clone(root, (("gov", "credits", "ctc"),)):
        copied = root.clone()
    copied.gov.credits.ctc.amount.update(start=instant("2017-01-01"), stop=instant("2035-01-01"), value=1000)
    return copied


def test_the_pinned_subtree_is_copied_and_rewritten_without_touching_the_original():
    root = tree()
    before = root.gov.credits.ctc.amount("2024-01-01")
    copied = pinned_copy(root)
    assert copied.gov.credits.ctc.amount("2024-01-01") == 1000
    assert root.gov.credits.ctc.amount("2024-01-01") == before == 2000
    assert copied("2024-01-01").gov.credits.ctc.amount == 1000
    assert root("2024-01-01").gov.credits.ctc.amount == 2000


def test_every_other_subtree_is_shared_and_keeps_its_parent():
    root = tree()
    copied = pinned_copy(root)
    assert copied.gov.states is root.gov.states
    assert copied.gov.credits.eitc is root.gov.credits.eitc
    assert copied.gov is not root.gov and copied.gov.credits is not root.gov.credits
    assert root.gov.states.parent is root.gov and root.gov.credits.eitc.parent is root.gov.credits
    assert copied.gov.credits.ctc.parent is copied.gov.credits and copied.gov.parent is copied
    assert all(child.parent is node for node in (root, root.gov, root.gov.credits) for child in node.children.values())


def test_shared_subtrees_reuse_their_values_at_an_instant():
    root = tree()
    warm = root("2024-01-01").gov.states
    copied = pinned_copy(root)
    assert copied("2024-01-01").gov.states is warm


def test_only_the_one_root_is_copied_that_way_and_the_class_is_restored_even_after_an_error():
    root, other = tree(), tree()
    original = ParameterNode.clone
    with pe_speedups._sharing_clone(root, (("gov", "credits", "ctc"),)):
        whole = other.clone()
    assert whole.gov.states is not other.gov.states
    assert ParameterNode.clone is original
    with pytest.raises(RuntimeError):
        with pe_speedups._sharing_clone(root, (("gov", "credits", "ctc"),)):
            raise RuntimeError("a pin function failed")
    assert ParameterNode.clone is original
    assert root.clone().gov.states is not root.gov.states
    assert isinstance(root.clone().gov.credits.ctc.amount, Parameter)


def test_a_subclass_that_inherits_clone_is_left_without_one_of_its_own():
    class CountryNode(ParameterNode):
        pass

    root = CountryNode("root", data={"gov": {"credits": {"ctc": {"values": {"2017-01-01": 1}}}, "x": {"values": {"2017-01-01": 2}}}})
    with pe_speedups._sharing_clone(root, (("gov", "credits"),)):
        copied = root.clone()
    assert copied.gov.x is root.gov.x and copied.gov.credits is not root.gov.credits
    assert "clone" not in vars(CountryNode)

"""The fault hooks: installing, passing values through, counting matching calls."""

import pytest

from jaxsam import hooks


def test_no_hook_passes_the_value_through_and_installed_restores():
    assert hooks.fire("free_space", 123, path="x") == 123
    with hooks.installed("free_space", lambda free, **_: free // 2):
        assert hooks.fire("free_space", 123, path="x") == 61
        with hooks.installed("free_space", lambda free, **_: 0):
            assert hooks.fire("free_space", 123, path="x") == 0
        assert hooks.fire("free_space", 123, path="x") == 61
    assert hooks.fire("free_space", 123, path="x") == 123


def test_unknown_point_is_refused():
    with pytest.raises(ValueError, match="unknown hook point 'chekpoint'"):
        with hooks.installed("chekpoint", lambda v, **_: v):
            pass


def test_raise_at_counts_only_matching_calls():
    hook = hooks.raise_at(2, KeyError("boom"), when=lambda path, **_: path == "m")
    assert hook("v", path="a") == "v"
    assert hook("v", path="m") == "v"  # first matching call
    assert hook("v", path="b") == "v"
    with pytest.raises(KeyError, match="boom"):
        hook("v", path="m")
    assert hook("v", path="m") == "v"  # fires once

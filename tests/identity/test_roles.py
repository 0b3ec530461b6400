"""Role matching: groups, claims (globs, lists, dotted paths), issuers; deny by default."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from hoopy.config.model import Role
from hoopy.identity.principal import Principal
from hoopy.identity.roles import claim_at, granted_targets, role_matches


def token(claims: dict[str, Any], groups: tuple[str, ...] = (), issuer: str = "gh") -> Principal:
    return Principal("s", "token", groups, issuer=issuer, claims=MappingProxyType(claims))


GH = {"repository": "acme/app", "ref": "refs/heads/main", "workflow": "deploy"}


def test_claim_globs_must_all_match() -> None:
    role = Role(
        "ci", (), ("app",), claims=(("repository", ("acme/*",)), ("ref", ("refs/heads/main",)))
    )
    assert role_matches(role, token(GH))
    assert not role_matches(role, token({**GH, "ref": "refs/heads/dev"}))
    assert not role_matches(role, token({"repository": "acme/app"}))  # missing claim


def test_groups_issuers_and_empty_roles() -> None:
    assert role_matches(Role("d", ("dev",), ("app",)), token({}, ("x", "dev")))
    assert not role_matches(Role("d", ("dev",), ("app",)), token({}, ("x",)))
    assert not role_matches(Role("i", ("dev",), ("app",), issuers=("okta",)), token({}, ("dev",)))
    assert not role_matches(Role("none", (), ("app",)), token(GH))  # matches nobody
    gateway_user = Principal("alice", "gateway_user", ("dev",))
    assert not role_matches(
        Role("ci", (), ("app",), claims=(("repository", ("*",)),)), gateway_user
    )


def test_list_claims_and_dotted_keys() -> None:
    k8s = {"kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "runner"}}}
    assert claim_at(k8s, "kubernetes.io.namespace") == "ci"
    assert claim_at(k8s, "kubernetes.io.serviceaccount.name") == "runner"
    assert claim_at({"realm_access": {"roles": ["a", "b"]}}, "realm_access.roles") == ["a", "b"]
    assert claim_at({"a": 1}, "a.b") is None
    role = Role("r", (), ("app",), claims=(("aud", ("hoopy",)),))
    assert role_matches(role, token({"aud": ["other", "hoopy"]}))


def test_granted_targets_unions_matching_roles() -> None:
    roles = [Role("a", ("x",), ("t1",)), Role("b", ("y",), ("t2",)), Role("c", ("z",), ("t3",))]
    assert granted_targets(roles, token({}, ("x", "y"))) == {"t1", "t2"}
    assert granted_targets(roles, token({}, ())) == frozenset()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=4), st.text(max_size=12))
def test_any_claim_shape_never_crashes(claims: dict[str, Any], path: str) -> None:
    claim_at(claims, path)
    role = Role("r", ("g",), ("t",), claims=((path or "x", ("*",)),))
    role_matches(role, token(claims, ("g",)))

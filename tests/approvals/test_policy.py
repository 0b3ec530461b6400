"""Approval policies: who may approve, when enough have, and the fingerprint binding a retry."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.approvals.policy import (
    ApprovalPolicy,
    Approver,
    Mode,
    Require,
    fingerprint,
    normalized_text,
    os_identity,
    principal_identity,
    refusal,
    satisfied,
    token_identity,
)
from hoopy.identity.principal import Principal
from hoopy.wire.params import MYSQL_TYPE_LONG, MYSQL_TYPE_VAR_STRING, Param

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
REQUESTER = "token:corp:alice"
WHITESPACE = b" \t\n\r\x0b\x0c"  # what bytes.strip() removes

policies = st.builds(
    ApprovalPolicy,
    mode=st.sampled_from(Mode),
    timeout=st.floats(min_value=0.001, max_value=1e9, allow_nan=False),
    valid_for=st.floats(min_value=0.001, max_value=1e9, allow_nan=False),
    approvers=st.lists(st.text(min_size=1, max_size=12), max_size=4).map(tuple),
    approvals=st.integers(min_value=1, max_value=10),
    require=st.sampled_from(Require),
)


def local(identity: str = "os:bob", *groups: str) -> Approver:
    return Approver(identity, identity.rpartition(":")[2], groups, "unix_socket")


def remote(identity: str = "token:corp:carol", *groups: str) -> Approver:
    return Approver(identity, identity.rpartition(":")[2], groups, "admin_listener")


def fp(**overrides: Any) -> str:
    fields: dict[str, Any] = {
        "requester": REQUESTER,
        "target": "prod",
        "database": "shop",
        "command": "COM_QUERY",
        "sql": b"DELETE FROM orders WHERE id = 1",
        "params": (),
    }
    fields.update(overrides)
    key = fields.pop("key", KEY)
    return fingerprint(key, **fields)


# --- ApprovalPolicy and Approver -------------------------------------------------------------


def test_policy_defaults_are_one_approval_on_hold() -> None:
    policy = ApprovalPolicy()
    assert policy.mode is Mode.HOLD
    assert policy.require is Require.ANY
    assert policy.approvals == 1
    assert policy.approvers == ()
    assert policy.to_json() == {
        "mode": "hold",
        "timeout": 300.0,
        "valid_for": 3600.0,
        "approvers": [],
        "approvals": 1,
        "require": "any",
    }


@given(policies)
def test_policy_round_trips_through_json_text(policy: ApprovalPolicy) -> None:
    data = json.loads(json.dumps(policy.to_json()))
    assert ApprovalPolicy.from_json(data) == policy


def test_policy_from_json_coerces_numbers_and_lists() -> None:
    policy = ApprovalPolicy.from_json(
        {
            "mode": "retry",
            "timeout": 60,
            "valid_for": "120",
            "approvers": ["dba", "sre"],
            "approvals": 2.0,
            "require": "all",
        }
    )
    assert policy == ApprovalPolicy(Mode.RETRY, 60.0, 120.0, ("dba", "sre"), 2, Require.ALL)
    assert isinstance(policy.timeout, float)
    assert isinstance(policy.approvers, tuple)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("mode", "later", ValueError),
        ("require", "most", ValueError),
        ("timeout", "soon", ValueError),
        ("approvals", None, TypeError),
    ],
)
def test_policy_from_json_rejects_unknown_values(field: str, value: object, error: type) -> None:
    data: dict[str, Any] = ApprovalPolicy().to_json()
    data[field] = value
    with pytest.raises(error):
        ApprovalPolicy.from_json(data)


def test_policy_from_json_needs_every_field() -> None:
    data = ApprovalPolicy().to_json()
    del data["valid_for"]
    with pytest.raises(KeyError):
        ApprovalPolicy.from_json(data)


def test_policy_is_immutable() -> None:
    policy = ApprovalPolicy()
    with pytest.raises(AttributeError):
        policy.approvals = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("via", "is_remote"),
    [("unix_socket", False), ("admin_listener", True), ("", True), ("UNIX_SOCKET", True)],
)
def test_only_the_unix_socket_is_local(via: str, is_remote: bool) -> None:
    # Anything but the exact local marker counts as remote: the safe default.
    assert Approver("os:bob", "bob", (), via).remote is is_remote


def test_approver_to_json_is_plain_json() -> None:
    approver = Approver("os:bob", "bob", ("dba", "wheel"), "unix_socket")
    data = approver.to_json()
    assert data == {
        "identity": "os:bob",
        "name": "bob",
        "groups": ["dba", "wheel"],
        "via": "unix_socket",
    }
    assert json.loads(json.dumps(data)) == data


# --- identities ------------------------------------------------------------------------------


def test_identities_name_the_way_a_person_proved_who_they_are() -> None:
    token = Principal(name="alice", method="token", issuer="corp")
    assert principal_identity(token) == "token:corp:alice"
    assert token_identity(token) == "token:corp:alice"
    assert (
        principal_identity(Principal(name="alice", method="gateway_user")) == "gateway_user:alice"
    )
    assert principal_identity(Principal(name="alice", method="passthrough")) == "passthrough:alice"
    assert os_identity("alice") == "os:alice"


def test_a_token_approver_with_the_requesters_issuer_and_subject_is_the_requester() -> None:
    asked = Principal(name="alice", method="token", issuer="corp", groups=("dev",))
    approving = Principal(name="alice", method="token", issuer="corp", groups=("dba",))
    approver = Approver(token_identity(approving), "alice", approving.groups, "admin_listener")
    policy = ApprovalPolicy(approvers=("dba",))
    assert refusal(policy, approver, principal_identity(asked)) is not None


def test_same_subject_of_another_issuer_is_someone_else() -> None:
    asked = Principal(name="alice", method="token", issuer="corp")
    other = Principal(name="alice", method="token", issuer="partner")
    assert principal_identity(asked) != token_identity(other)


def test_same_name_by_another_method_is_someone_else() -> None:
    names = {
        principal_identity(Principal(name="alice", method="gateway_user")),
        principal_identity(Principal(name="alice", method="passthrough")),
        principal_identity(Principal(name="alice", method="token", issuer="corp")),
        os_identity("alice"),
    }
    assert len(names) == 4


# Issuer names are config names (hoopy.config.fields.NAME_PATTERN): no ':' in them, so the
# first ':' after "token:" ends the issuer whatever the subject holds.
issuer_names = st.from_regex(re.compile(r"[A-Za-z0-9_.-]{1,8}"), fullmatch=True)
people = st.one_of(
    st.tuples(st.just("token"), issuer_names, st.text(max_size=8)),
    st.tuples(
        st.sampled_from(["gateway_user", "passthrough", "os"]), st.none(), st.text(max_size=8)
    ),
)


def _identity(person: tuple[str, str | None, str]) -> str:
    method, issuer, name = person
    if method == "os":
        return os_identity(name)
    return principal_identity(Principal(name=name, method=method, issuer=issuer))


@given(people, people)
def test_identities_do_not_collide(
    a: tuple[str, str | None, str], b: tuple[str, str | None, str]
) -> None:
    assert (_identity(a) == _identity(b)) == (a == b)


# --- refusal ---------------------------------------------------------------------------------


def test_an_eligible_approver_is_not_refused() -> None:
    assert refusal(ApprovalPolicy(), local(), REQUESTER) is None
    assert (
        refusal(ApprovalPolicy(approvers=("dba",)), remote("token:corp:c", "dba"), REQUESTER)
        is None
    )
    assert refusal(ApprovalPolicy(approvers=("dba",)), local("os:bob", "dba"), REQUESTER) is None


@pytest.mark.parametrize("via", ["unix_socket", "admin_listener"])
def test_no_self_approval_even_with_the_right_groups(via: str) -> None:
    approver = Approver(REQUESTER, "alice", ("dba",), via)
    reason = refusal(ApprovalPolicy(approvers=("dba",)), approver, REQUESTER)
    assert reason == "the principal who asked for an approval cannot approve it"
    assert refusal(ApprovalPolicy(), approver, REQUESTER) == reason


def test_self_approval_is_checked_before_anything_else() -> None:
    approver = Approver(REQUESTER, "alice", (), "admin_listener")
    reason = refusal(ApprovalPolicy(approvers=("dba",)), approver, REQUESTER, [REQUESTER])
    assert reason is not None and "who asked" in reason


@pytest.mark.parametrize(
    "decided", [["os:bob"], ("token:x:y", "os:bob"), {"os:bob"}, iter(["os:bob"])]
)
def test_no_second_approval_by_the_same_person(decided: Any) -> None:
    reason = refusal(ApprovalPolicy(approvals=2), local("os:bob"), REQUESTER, decided)
    assert reason == "you have approved this request already; another approver must"


def test_others_approvals_do_not_refuse() -> None:
    assert refusal(ApprovalPolicy(approvals=2), local("os:bob"), REQUESTER, ["os:carol"]) is None


def test_approving_needs_membership_of_one_of_the_groups() -> None:
    policy = ApprovalPolicy(approvers=("dba", "sre"))
    reason = refusal(policy, local("os:bob", "dev", "ops"), REQUESTER)
    assert reason == "approving needs membership of one of dba, sre; bob is in dev, ops"
    reason = refusal(policy, remote("token:corp:carol"), REQUESTER)
    assert reason == "approving needs membership of one of dba, sre; carol is in no group"
    assert refusal(policy, local("os:bob", "dev", "sre"), REQUESTER) is None


@pytest.mark.parametrize("group", ["DBA", "dba ", "db", "dbadmin", ""])
def test_group_names_match_exactly(group: str) -> None:
    assert (
        refusal(ApprovalPolicy(approvers=("dba",)), local("os:bob", group), REQUESTER) is not None
    )


def test_without_groups_only_the_local_socket_may_approve() -> None:
    reason = refusal(ApprovalPolicy(), remote("token:corp:carol", "dba", "admin"), REQUESTER)
    assert reason is not None and "local admin socket" in reason
    assert refusal(ApprovalPolicy(), local("os:bob"), REQUESTER) is None


@given(
    policies,
    st.text(max_size=6),
    st.lists(st.text(max_size=4), max_size=3),
    st.sampled_from(["unix_socket", "admin_listener"]),
    st.text(max_size=6),
    st.lists(st.text(max_size=6), max_size=3),
)
def test_refusal_never_lets_through_what_it_must_not(
    policy: ApprovalPolicy,
    identity: str,
    groups: list[str],
    via: str,
    requester: str,
    decided: list[str],
) -> None:
    approver = Approver(identity, identity, tuple(groups), via)
    if refusal(policy, approver, requester, decided) is None:
        assert identity != requester
        assert identity not in decided
        if policy.approvers:
            assert set(groups) & set(policy.approvers)
        else:
            assert not approver.remote


# --- satisfied -------------------------------------------------------------------------------


def test_one_approval_is_enough_by_default() -> None:
    assert not satisfied(ApprovalPolicy(), [])
    assert satisfied(ApprovalPolicy(), [local()])


def test_approvals_count_distinct_people() -> None:
    policy = ApprovalPolicy(approvals=2)
    bob = local("os:bob")
    assert not satisfied(policy, [bob])
    assert not satisfied(policy, [bob, bob])
    # The same identity by another way in (or with other groups) is still one person.
    assert not satisfied(policy, [bob, Approver("os:bob", "bob", ("dba",), "admin_listener")])
    assert satisfied(policy, [bob, local("os:carol")])
    assert satisfied(policy, [bob, local("os:carol"), local("os:dave")])


def test_require_any_needs_no_coverage() -> None:
    policy = ApprovalPolicy(approvers=("dba", "sre"), approvals=2, require=Require.ANY)
    assert satisfied(policy, [local("os:a", "dba"), local("os:b", "dba")])


def test_require_all_needs_every_group_covered() -> None:
    policy = ApprovalPolicy(approvers=("dba", "sre"), approvals=2, require=Require.ALL)
    assert not satisfied(policy, [local("os:a", "dba"), local("os:b", "dba")])
    assert satisfied(policy, [local("os:a", "dba"), local("os:b", "sre")])
    assert satisfied(policy, [local("os:a", "dba", "sre"), local("os:b", "dev")])


def test_require_all_still_needs_the_number_of_people() -> None:
    policy = ApprovalPolicy(approvers=("dba", "sre"), approvals=2, require=Require.ALL)
    assert not satisfied(policy, [local("os:a", "dba", "sre")])
    one = ApprovalPolicy(approvers=("dba", "sre"), approvals=1, require=Require.ALL)
    assert satisfied(one, [local("os:a", "dba", "sre")])
    assert not satisfied(one, [local("os:a", "dba")])


def test_require_all_without_groups_is_a_count() -> None:
    policy = ApprovalPolicy(approvals=2, require=Require.ALL)
    assert not satisfied(policy, [local("os:a")])
    assert satisfied(policy, [local("os:a"), local("os:b")])


@given(
    policies,
    st.lists(
        st.tuples(
            st.sampled_from("abcd"), st.lists(st.sampled_from(["dba", "sre", "dev"]), max_size=3)
        ),
        max_size=5,
    ),
)
def test_satisfied_matches_its_definition(
    policy: ApprovalPolicy, people: list[tuple[str, list[str]]]
) -> None:
    approvals = [local(f"os:{name}", *groups) for name, groups in people]
    enough = len({name for name, _ in people}) >= policy.approvals
    if policy.require is Require.ALL:
        covered = {g for _, groups in people for g in groups}
        enough = enough and set(policy.approvers) <= covered
    assert satisfied(policy, approvals) is enough
    assert satisfied(policy, list(reversed(approvals))) is enough


# --- normalized_text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (b"SELECT 1", b"SELECT 1"),
        (b"  SELECT 1  ", b"SELECT 1"),
        (b"SELECT 1;", b"SELECT 1"),
        (b"SELECT 1;;;", b"SELECT 1"),
        (b"\n\tSELECT 1 ;\r\n", b"SELECT 1"),
        (b"SELECT 1 ;;  ", b"SELECT 1"),
        (b";SELECT 1", b";SELECT 1"),  # leading semicolons are the statement's
        (b"SELECT  1", b"SELECT  1"),  # inner white space is not collapsed
        (b"SELECT 'a;  '", b"SELECT 'a;  '"),
        (b"SELECT 1 -- c", b"SELECT 1 -- c"),  # comments are kept
        (b"SELECT 1 /* ; */", b"SELECT 1 /* ; */"),
        (b"SELECT\xa01", b"SELECT\xa01"),  # not ASCII white space
        (b"", b""),
        (b" ;; ", b""),
    ],
)
def test_normalized_text(sql: bytes, expected: bytes) -> None:
    assert normalized_text(sql) == expected


# A statement that neither starts with white space nor ends with white space or ';'.
cores = st.binary(max_size=40).filter(
    lambda b: not b or (b[0] not in WHITESPACE and b[-1] not in WHITESPACE + b";")
)
spaces = st.text(alphabet=WHITESPACE.decode(), max_size=4).map(str.encode)


@given(cores, spaces, st.integers(0, 3), spaces)
def test_normalized_text_removes_only_the_surroundings(
    core: bytes, before: bytes, semicolons: int, after: bytes
) -> None:
    assert normalized_text(before + core + b";" * semicolons + after) == core


@given(st.binary(max_size=60))
def test_normalized_text_is_a_slice_of_the_statement(sql: bytes) -> None:
    text = normalized_text(sql)
    assert text in sql
    assert text == text.strip()
    assert sql.lstrip().startswith(text)
    rest = sql.lstrip()[len(text) :]
    assert set(rest) <= set(WHITESPACE + b";")


@pytest.mark.parametrize("sql", [b"SELECT 1; ;", b"SELECT 1;\n;", b"SELECT 1 ; ; ;"])
def test_normalized_text_strips_every_trailing_semicolon(sql: bytes) -> None:
    assert normalized_text(sql) == b"SELECT 1"
    assert normalized_text(normalized_text(sql)) == normalized_text(sql)


# --- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_is_stable_hex_sha256() -> None:
    mark = fp()
    assert mark == fp()
    assert re.fullmatch(r"[0-9a-f]{64}", mark)


def test_fingerprint_is_an_hmac_of_a_length_prefixed_layout() -> None:
    # Fingerprints are kept in the journal across restarts: their layout must not drift.
    params = (1, "x", b"\x00y", None)
    head = json.dumps([REQUESTER, "prod", "shop", "COM_QUERY", 4]).encode()
    mac = hmac.new(KEY, head, hashlib.sha256)
    mac.update((8).to_bytes(8, "big") + b"SELECT ?")
    for p in params:
        mac.update(b"\x00" + repr(p).encode())
    assert fp(sql=b" SELECT ?; ", params=params) == mac.hexdigest()


def test_fingerprint_needs_the_key() -> None:
    assert fp(key=OTHER_KEY) != fp()
    assert fp(key=b"") != fp()
    unkeyed = hashlib.sha256(b"DELETE FROM orders WHERE id = 1").hexdigest()
    assert fp() != unkeyed


@pytest.mark.parametrize(
    "change",
    [
        {"requester": "token:corp:mallory"},
        {"requester": "gateway_user:alice"},
        {"target": "staging"},
        {"database": "shop2"},
        {"database": None},
        {"database": ""},
        {"database": "None"},
        {"command": "COM_STMT_EXECUTE"},
        {"sql": b"DELETE FROM orders WHERE id = 2"},
        {"sql": b"DELETE FROM orders WHERE id ="},
        {"sql": b"delete from orders where id = 1"},
        {"sql": b"DELETE FROM orders WHERE id = 1 -- ok"},
        {"sql": b"DELETE  FROM orders WHERE id = 1"},
        {"params": (1,)},
        {"params": (None,)},
    ],
)
def test_any_change_changes_the_fingerprint(change: dict[str, Any]) -> None:
    assert fp(**change) != fp()


def test_surrounding_white_space_and_semicolons_do_not_change_it() -> None:
    base = fp(sql=b"DELETE FROM orders WHERE id = 1")
    assert fp(sql=b"  DELETE FROM orders WHERE id = 1;\n") == base
    assert fp(sql=b"DELETE FROM orders WHERE id = 1 ;;") == base


@pytest.mark.parametrize(
    ("a", "b"),
    [
        # bytes moved between the text and the parameters
        ({"sql": b"ab", "params": ()}, {"sql": b"a", "params": ("b",)}),
        ({"sql": b"ab", "params": ("c",)}, {"sql": b"a", "params": ("bc",)}),
        ({"sql": b"a\x00'b'", "params": ()}, {"sql": b"a", "params": ("b",)}),
        ({"sql": b"a" + b"\x00" * 8, "params": ()}, {"sql": b"a", "params": ()}),
        # between parameters
        ({"params": ("ab",)}, {"params": ("a", "b")}),
        ({"params": ("a\x00b",)}, {"params": ("a", "b")}),
        ({"params": (b"a\x00'b'",)}, {"params": (b"a", "b")}),
        ({"params": ("a", "")}, {"params": ("a",)}),
        ({"params": ((),)}, {"params": ()}),
        # between the head fields
        ({"requester": "ab", "target": "c"}, {"requester": "a", "target": "bc"}),
        ({"target": "a", "database": "b"}, {"target": "a,b", "database": None}),
        ({"database": 'x", "y'}, {"database": "x", "command": 'y", ' + '"COM_QUERY'}),
        ({"command": "Q", "sql": b"5"}, {"command": "Q5", "sql": b""}),
        # parameter values of different types that print alike in other ways
        ({"params": (1,)}, {"params": ("1",)}),
        ({"params": (1,)}, {"params": (True,)}),
        ({"params": (1,)}, {"params": (1.0,)}),
        ({"params": ("a",)}, {"params": (b"a",)}),
        ({"params": (0.0,)}, {"params": (-0.0,)}),
        ({"params": (None,)}, {"params": ("None",)}),
    ],
)
def test_fields_cannot_be_confused(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert fp(**a) != fp(**b)


def test_wire_params_bind_type_value_and_name() -> None:
    one = Param(MYSQL_TYPE_LONG, False, 1)
    assert fp(params=(one,)) == fp(params=(Param(MYSQL_TYPE_LONG, False, 1),))
    assert fp(params=(one,)) != fp(params=(Param(MYSQL_TYPE_LONG, False, 2),))
    assert fp(params=(one,)) != fp(params=(Param(MYSQL_TYPE_LONG, True, 1),))
    assert fp(params=(one,)) != fp(params=(Param(MYSQL_TYPE_VAR_STRING, False, "1"),))
    assert fp(params=(one,)) != fp(params=(Param(MYSQL_TYPE_LONG, False, 1, "n"),))


def test_params_may_be_any_sequence() -> None:
    assert fp(params=[1, "a"]) == fp(params=(1, "a"))


tight = st.text(alphabet='a,":\\\x00 ', max_size=4)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.0, -0.0, 1.0]),
    st.text(alphabet="a'\"\\\x00 ", max_size=3),
    st.binary(max_size=3),
)
statements = st.tuples(
    tight,
    tight,
    st.one_of(st.none(), tight),
    tight,
    st.lists(st.sampled_from([b"a", b";", b" ", b"\n", b"\x00"]), max_size=5).map(b"".join),
    st.lists(values, max_size=3).map(tuple),
)


def _canonical(s: tuple[Any, ...]) -> tuple[Any, ...]:
    requester, target, database, command, sql, params = s
    return (requester, target, database, command, normalized_text(sql), tuple(map(repr, params)))


@settings(max_examples=300)
@given(statements, statements)
def test_fingerprints_differ_exactly_when_statements_do(
    a: tuple[Any, ...], b: tuple[Any, ...]
) -> None:
    def mark(s: tuple[Any, ...]) -> str:
        requester, target, database, command, sql, params = s
        return fingerprint(
            KEY,
            requester=requester,
            target=target,
            database=database,
            command=command,
            sql=sql,
            params=params,
        )

    assert (mark(a) == mark(b)) == (_canonical(a) == _canonical(b))

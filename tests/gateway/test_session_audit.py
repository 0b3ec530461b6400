"""SessionAudit's statement records from raw command payloads: prepared-statement state,
hostile bytes, redaction."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from hoopy.config.model import AuditSettings
from hoopy.gateway.audit_log import AuditLog
from hoopy.gateway.session_audit import SessionAudit
from hoopy.identity.principal import Principal
from hoopy.wire.params import LONG_DATA, Param, encode_execute
from hoopy.wire.response import PreparedInfo, ResponseSummary, ResultInfo

PRINCIPAL = Principal(name="agent", method="gateway_user")


def session_audit(redact: bool = False, max_value_bytes: int = 16384) -> SessionAudit:
    """``redact``: secrets and personal data; otherwise nothing (not even the default)."""
    settings = AuditSettings(
        directory=Path("/nonexistent"),
        redact=("secrets", "personal") if redact else (),
        max_value_bytes=max_value_bytes,
    )
    return SessionAudit(AuditLog(settings, None), "s-1", settings, capabilities=0)


def prepared(audit: SessionAudit, sql: bytes, statement_id: int, params: int) -> None:
    """A COM_STMT_PREPARE recorded, then its response, as the session passes them on."""
    command = audit.commands.decode(b"\x16" + sql)
    audit._statement(1, PRINCIPAL, command.payload, decoded=command)
    summary = ResponseSummary(
        results=[ResultInfo()], prepared=PreparedInfo(statement_id, 1, params, 0)
    )
    audit.commands.completed(command, summary)


def reached_server(audit: SessionAudit, payload: bytes) -> None:
    """A command without a response was forwarded (the session reports it)."""
    audit.commands.no_response(audit.commands.decode(payload))


def test_execute_records_sql_params_and_reuses_bound_types() -> None:
    audit = session_audit()
    prepared(audit, b"SELECT ?, ?", 7, 2)
    first = audit._statement(
        2, PRINCIPAL, encode_execute(7, [Param(8, False, 5), Param(0xFD, False, "x")])
    )
    assert first["sql"] == "SELECT ?, ?"
    assert first["params"] == [
        {"type": "LONGLONG", "value": 5},
        {"type": "VAR_STRING", "value": "x"},
    ]
    # A re-execute without types (new_params_bound_flag 0) uses the ones bound before.
    again = b"\x17" + (7).to_bytes(4, "little") + b"\x00\x01\x00\x00\x00" + b"\x00" + b"\x00"
    again += (6).to_bytes(8, "little") + b"\x01y"
    assert audit._statement(3, PRINCIPAL, again)["params"] == [
        {"type": "LONGLONG", "value": 6},
        {"type": "VAR_STRING", "value": "y"},
    ]
    # MariaDB's "last prepared statement" id.
    last = audit._statement(
        4, PRINCIPAL, encode_execute(0xFFFFFFFF, [Param(8, False, 1), Param(6, False, None)])
    )
    assert last["statement_id"] == 7 and last["sql"] == "SELECT ?, ?"


def test_long_data_and_closing_and_unknown_statements() -> None:
    audit = session_audit(max_value_bytes=4)
    prepared(audit, b"INSERT INTO t VALUES (?)", 3, 1)
    chunk = b"\x18" + (3).to_bytes(4, "little") + (0).to_bytes(2, "little") + b"abcdefgh"
    record = audit._statement(2, PRINCIPAL, chunk)
    assert record["data"] == {"type": "BLOB", "value": "abcd", "truncated": True, "length": 8}
    reached_server(audit, chunk)
    execute = audit._statement(3, PRINCIPAL, encode_execute(3, [Param(0xFC, False, LONG_DATA)]))
    assert execute["statement_id"] == 3
    assert execute["params"] == [{"type": "BLOB", "long_data": True}]
    reached_server(audit, b"\x19" + (3).to_bytes(4, "little"))
    gone = audit._statement(4, PRINCIPAL, encode_execute(3, [Param(8, False, 1)]))
    assert "unknown statement id" in gone["params_error"]


def test_sensitive_values_are_redacted_in_sql_and_params() -> None:
    audit = session_audit(redact=True)
    query = audit._statement(
        1, PRINCIPAL, b"\x03SELECT * FROM u WHERE mail = 'a.b@example.com' AND id = 'x'"
    )
    assert query["sql"] == "SELECT * FROM u WHERE mail = '<redacted:email>' AND id = 'x'"
    assert query["redacted"] == ["email"]
    prepared(audit, b"SELECT ?", 1, 1)
    execute = audit._statement(
        2, PRINCIPAL, encode_execute(1, [Param(0xFD, False, "4111111111111111")])
    )
    assert execute["params"] == [
        {"type": "VAR_STRING", "value": "<redacted:card>", "redacted": True}
    ]
    assert audit._hide_error


@settings(max_examples=300)
@given(
    command=st.sampled_from([0x03, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1C, 0x02, 0x0C, 0x11, 0x99]),
    body=st.binary(max_size=80),
)
def test_hostile_payloads_always_give_a_record(command: int, body: bytes) -> None:
    audit = session_audit(redact=True)
    prepared(audit, b"SELECT ?, ?, ?", 1, 3)
    record = audit._statement(2, PRINCIPAL, bytes((command,)) + body)
    assert record["kind"] == "statement" and record["seq"] == 2


def test_by_default_secrets_are_redacted_and_personal_data_is_not() -> None:
    settings = AuditSettings(directory=Path("/nonexistent"))
    audit = SessionAudit(AuditLog(settings, None), "s-1", settings, capabilities=0)
    token = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
    record = audit._statement(
        1, PRINCIPAL, f"\x03UPDATE bots SET token = '{token}' WHERE owner = 'a@b.example'".encode()
    )
    assert (
        record["sql"]
        == "UPDATE bots SET token = '<redacted:api_token>' WHERE owner = 'a@b.example'"
    )
    assert record["redacted"] == ["api_token"]


def test_parameters_of_credential_bearing_statements_are_redacted() -> None:
    audit = session_audit()  # no detectors at all: credentials are redacted regardless
    prepared(audit, b"UPDATE app_users SET password = ? WHERE id = ?", 4, 2)
    chunk = b"\x18" + (4).to_bytes(4, "little") + (0).to_bytes(2, "little") + b"hunter2"
    long_data = audit._statement(2, PRINCIPAL, chunk)
    assert long_data["data"] == {"type": "BLOB", "value": "<redacted:credential>", "redacted": True}
    reached_server(audit, chunk)
    execute = audit._statement(
        3, PRINCIPAL, encode_execute(4, [Param(0xFC, False, LONG_DATA), Param(8, False, 7)])
    )
    assert execute["params"] == [
        {"type": "BLOB", "long_data": True},
        {"type": "LONGLONG", "value": "<redacted:credential>", "redacted": True},
    ]
    assert execute["redacted"] == ["credential"] and audit._hide_error
    # NULL carries nothing to hide.
    again = audit._statement(
        4, PRINCIPAL, encode_execute(4, [Param(6, False, None), Param(8, False, 7)])
    )
    assert again["params"][0] == {"type": "NULL", "value": None}


def test_credential_literals_are_redacted_in_queries_and_prepares() -> None:
    audit = session_audit()
    query = audit._statement(1, PRINCIPAL, b"\x03CREATE USER u IDENTIFIED /**/ BY 'hunter2'")
    assert query["sql"] == "CREATE USER u IDENTIFIED /**/ BY '<redacted:credential>'"
    assert query["redacted"] == ["credential"]
    prepared(audit, b"SELECT 1 FROM t WHERE k = AES_ENCRYPT('x', 'hunter2')", 5, 0)
    recorded = audit.commands.prepared[5].recorded
    assert recorded.credential and "hunter2" not in str(recorded.sql)


def test_a_multibyte_client_charset_cannot_hide_a_credential_from_redaction() -> None:
    # In gbk "\x81`" is one character: the server reads `a\x81` , 'x' -- ` as one identifier
    # and runs PASSWORD('hunter2'); byte by byte, the call sits in a comment.
    sql = b"\x03SELECT `a\x81` , 'x' -- ` , PASSWORD('hunter2')"
    audit = session_audit()
    audit.commands.multibyte = True  # the session's client character set may be gbk
    record = audit._statement(1, PRINCIPAL, sql)
    assert "hunter2" not in record["sql"]
    assert record["redacted"] == ["credential"]

"""SessionCommands: one decode per command, and the session state it keeps from what the
server did (prepared statements, LAST_STATEMENT_ID, long data, resets, the database)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hoopy.wire.command import SessionCommands
from hoopy.wire.messages import ErrPacket
from hoopy.wire.params import LAST_STATEMENT_ID
from hoopy.wire.response import PreparedInfo, ResponseSummary, ResultInfo

OK = ResponseSummary()
ERR = ResponseSummary(error=ErrPacket(1064, "42000", "syntax"))


def prepare(commands: SessionCommands, sql: bytes, statement_id: int, params: int = 1) -> None:
    command = commands.decode(b"\x16" + sql)
    command.verdict = "noted at prepare"
    commands.completed(
        command,
        ResponseSummary(results=[ResultInfo()], prepared=PreparedInfo(statement_id, 1, params, 0)),
    )


def stmt(kind: int, statement_id: int, rest: bytes = b"") -> bytes:
    return bytes((kind,)) + statement_id.to_bytes(4, "little") + rest


def test_prepared_statements_are_found_by_id_and_by_last_statement_id() -> None:
    commands = SessionCommands(0, "db")
    prepare(commands, b"SELECT ?", 7)
    execute = commands.decode(stmt(0x17, 7))
    assert execute.prepared is not None and execute.prepared.sql == b"SELECT ?"
    assert execute.prepared.verdict == "noted at prepare"
    last = commands.decode(stmt(0x17, LAST_STATEMENT_ID))
    assert last.statement_id == 7 and last.prepared is execute.prepared
    commands.no_response(commands.decode(stmt(0x18, 7, b"\x00\x00chunk")))
    assert execute.prepared.long_data == {0}
    commands.completed(commands.decode(stmt(0x1A, 7)), OK)  # COM_STMT_RESET
    assert execute.prepared.long_data == set()
    commands.no_response(commands.decode(stmt(0x19, 7)))  # COM_STMT_CLOSE
    assert commands.decode(stmt(0x17, 7)).prepared is None


def test_a_failed_prepare_adds_nothing_and_resets_clear_everything() -> None:
    commands = SessionCommands(0)
    command = commands.decode(b"\x16SELEC ?")
    commands.completed(command, ERR)
    assert commands.prepared == {} and commands.last_prepared is None
    prepare(commands, b"SELECT 1", 3, 0)
    commands.completed(commands.decode(b"\x1f"), ERR)  # a failed COM_RESET_CONNECTION
    assert 3 in commands.prepared
    commands.completed(commands.decode(b"\x1f"), OK)
    assert commands.prepared == {} and commands.last_prepared is None


def test_the_database_follows_init_db_and_use_that_succeed() -> None:
    commands = SessionCommands(0, "first")
    commands.completed(commands.decode(b"\x02second"), ERR)
    assert commands.database == "first"
    commands.completed(commands.decode(b"\x02second"), OK)
    assert commands.database == "second"
    query = commands.decode(b"\x03USE third")
    query.use_database = "third"  # what the analysis notes
    commands.completed(query, OK)
    assert commands.database == "third"
    # USE among other statements, and the text failed somewhere: the database is unknown.
    several = commands.decode(b"\x03USE fourth; SELECT nope")
    several.use_database, several.use_in_several = "fourth", True
    commands.completed(several, ERR)
    assert commands.database is None


@given(st.binary(min_size=1, max_size=40))
def test_any_payload_decodes(payload: bytes) -> None:
    commands = SessionCommands(0)
    prepare(commands, b"SELECT ?", 1)
    command = commands.decode(payload)
    assert command.kind == payload[0]
    command.sql()
    commands.no_response(command)
    commands.completed(command, OK)

"""MySQL error numbers and SQLSTATEs hoopy uses when it answers a client itself.

Server errors from mysqld_error.h, client errors (2000+) from errmsg.h: a client that sees
one of these reacts as it would to the server's own (reconnect on 2013, and so on).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorKind:
    code: int
    sqlstate: str


CON_COUNT = ErrorKind(1040, "08004")  # ER_CON_COUNT_ERROR: Too many connections
HANDSHAKE = ErrorKind(1043, "08S01")  # ER_HANDSHAKE_ERROR: Bad handshake
DB_ACCESS_DENIED = ErrorKind(1044, "42000")  # ER_DBACCESS_DENIED_ERROR
ACCESS_DENIED = ErrorKind(1045, "28000")  # ER_ACCESS_DENIED_ERROR
UNKNOWN_COMMAND = ErrorKind(1047, "08S01")  # ER_UNKNOWN_COM_ERROR
SERVER_SHUTDOWN = ErrorKind(1053, "08S01")  # ER_SERVER_SHUTDOWN
NET_READ_INTERRUPTED = ErrorKind(1159, "08S01")  # ER_NET_READ_INTERRUPTED (idle timeout)
HOST_BLOCKED = ErrorKind(1129, "HY000")  # ER_HOST_IS_BLOCKED (failed-login throttle)
NOT_ALLOWED_COMMAND = ErrorKind(1148, "42000")  # ER_NOT_ALLOWED_COMMAND (LOCAL INFILE)
PACKET_TOO_LARGE = ErrorKind(1153, "08S01")  # ER_NET_PACKET_TOO_LARGE
NET_UNCOMPRESS = ErrorKind(1157, "08S01")  # ER_NET_UNCOMPRESS_ERROR (unreadable compressed frame)
NOT_SUPPORTED_AUTH_MODE = ErrorKind(1251, "08004")  # ER_NOT_SUPPORTED_AUTH_MODE
SECURE_TRANSPORT_REQUIRED = ErrorKind(3159, "HY000")  # ER_SECURE_TRANSPORT_REQUIRED
# ER_CONNECT_TO_FOREIGN_DATA_SOURCE: "Unable to connect to foreign data source", the server's
# own error for a backend it cannot reach. (The client-side 2003 would fit better, but
# libmariadb rejects client error numbers coming from a server as a malformed packet.)
TARGET_UNAVAILABLE = ErrorKind(1429, "HY000")
SERVER_LOST = ErrorKind(2013, "HY000")  # CR_SERVER_LOST
# ER_OPTION_PREVENTS_STATEMENT ("... is running with the %s option so it cannot execute this
# statement"): a setting of the server's, here hoopy's guardrails, forbids the statement. Its
# SQLSTATE HY000 is not a privilege error, so clients do not retry it with other credentials.
GUARDRAIL = ErrorKind(1290, "HY000")
# ER_AUDIT_API_ABORT (MySQL 5.7+): the statement was stopped because it could not be audited.
AUDIT_UNAVAILABLE = ErrorKind(3164, "HY000")
# ER_UNKNOWN_ERROR: hoopy could not mask a value of a result, so it cut the result there.
MASKING_FAILED = ErrorKind(1105, "HY000")

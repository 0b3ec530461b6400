"""What a statement does, read as the server reads it: the facts guardrail rules match.

Sans-IO and pure. ``analyse(text, server)`` lexes a COM_QUERY's (or a prepare's) text with
``hoopy.sql.lexer`` under every reading that can differ (executable comments as code, as
comments and as the target runs them; each ``sql_mode`` quoting), splits it into statements
at ``;``, and describes each statement of each reading as ``StatementFacts``. A rule is
matched against every one of them, so a statement shows what it does under any reading the
server might take.

Who decides what:

- **The statement kind is hoopy's own reading of the leading keywords**, never sqlglot's:
  sqlglot's MySQL dialect parses ``SHUTDOWN`` as a column and ``GRANT``, ``CALL`` or
  ``REPLACE`` as an opaque ``Command``. ``ANALYZE <statement>`` (MariaDB) and ``EXPLAIN
  ANALYZE <statement>`` (MySQL) run their statement, so they are read as it.
- **Tables, WHERE and LIMIT come from sqlglot** (MySQL dialect, its compiled ``sqlglotc``
  build when installed), given the statement's code: comments dropped, executable comments'
  contents inline, ``"..."`` identifiers (``ANSI_QUOTES``) backquoted, and every string
  literal replaced by ``'?'``. Facts therefore never depend on a string's content, which is
  what lets ``Analyser`` cache them by the statement's shape (``shape``).
- **Functions** are words followed by ``(`` in the code, whatever sqlglot makes of them.
- A statement hoopy cannot read (an unknown leading word, or a statement whose kind needs
  sqlglot's facts and that sqlglot cannot parse) has ``parsed = False``: rule sets decide
  what happens to it (deny by default).
- ``PREPARE s FROM 'text'`` and ``EXECUTE IMMEDIATE 'text'`` carry the analysis of their text
  in ``dynamic``; from a variable (``FROM @q``) the text is unknown: ``dynamic_unknown``.

"Trivially true" (``where == "trivial"``) is decided without looking at any literal's value:
a condition with no column in it is constant (``1=1``, ``TRUE``, ``1 IN (1)``, ``@x``,
``1=0`` too: constant either way), a column compared with itself (``id = id``) is trivial,
an OR with a trivial side and an AND of trivial sides are trivial.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hoopy.sql.lexer import (
    EXEC_CLOSE,
    EXEC_OPEN,
    PUNCT,
    QIDENT,
    STRING,
    WORD,
    Reading,
    ServerVersion,
    Token,
    contains,
    masked,
    readings_for,
    statements,
    string_value,
    tokenize,
)

_COMMENTS = frozenset(("comment", EXEC_OPEN, EXEC_CLOSE))

# sqlglot logs the text of statements it falls back on ("... contains unsupported syntax"):
# statement text must never reach a log (it may hold credentials).
logging.getLogger("sqlglot").setLevel(logging.CRITICAL + 1)


@dataclass(frozen=True, slots=True)
class TableRef:
    """A table (or view) a statement names. ``schema`` None: unqualified, resolved against
    the session's current database when rules are matched."""

    schema: str | None
    name: str


@dataclass(frozen=True, slots=True)
class Variable:
    """A variable a SET statement assigns: ``scope`` is ``session``, ``global``,
    ``persist``, ``persist_only`` or ``user`` (``@name``)."""

    scope: str
    name: str


@dataclass(frozen=True, slots=True)
class StatementFacts:
    kind: str  # "select", "delete", "create_table", "grant", "set", "unknown", ...
    parsed: bool = True
    tables: frozenset[TableRef] = frozenset()
    tables_known: bool = True  # False: the statement names tables hoopy could not list
    where: str | None = None  # UPDATE/DELETE: "missing", "trivial" or "present"
    limit: bool = False
    functions: frozenset[str] = frozenset()  # upper case
    variables: frozenset[Variable] = frozenset()
    into_file: bool = False  # SELECT ... INTO OUTFILE / DUMPFILE
    local: bool = False  # LOAD DATA|XML LOCAL
    database: str | None = None  # USE <database>
    dynamic: tuple[StatementFacts, ...] = ()  # PREPARE ... FROM 'text', EXECUTE IMMEDIATE
    dynamic_unknown: bool = False  # PREPARE ... FROM @variable
    charset: str | None = None  # the client character set it switches to ("?": unknown)
    text: str = ""  # normalized: code only, words upper case, literals as ?


@dataclass(frozen=True, slots=True)
class Analysis:
    """Every statement of every reading of one text (deduplicated, in order)."""

    statements: tuple[StatementFacts, ...]
    # The text's statements under the first reading (the one the server most likely takes),
    # for callers that need their order, such as tracking ``USE``.
    primary: tuple[StatementFacts, ...] = field(default=())
    # The database the text's last USE switches to (under the first reading), if any.
    use_database: str | None = None
    # Whether any statement, under any reading, is a LOAD DATA|XML ... LOCAL (the texts of
    # dynamic SQL included).
    loads_local: bool = False
    # The readings disagree on the database a USE selects: it is unknown afterwards.
    use_uncertain: bool = False
    # The client character sets the text switches to (SET NAMES x, SET CHARACTER SET x;
    # "?" when it sets one hoopy cannot name, such as SET character_set_client = @v).
    charsets: frozenset[str] = frozenset()
    # Verdicts already given (hoopy.policy.rules.Policy.judge): by (policy, database).
    verdicts: dict[tuple[int, str | None], Any] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )


# -- statement kinds ---------------------------------------------------------------------------

# CREATE/ALTER/DROP <object>: the words that may come between the verb and the object.
_DDL_SKIP = frozenset(
    (b"OR", b"REPLACE", b"TEMPORARY", b"UNIQUE", b"FULLTEXT", b"SPATIAL", b"AGGREGATE",
     b"ONLINE", b"OFFLINE", b"IGNORE", b"UNDO", b"EXTERNAL", b"UNDEFINED", b"MERGE",
     b"TEMPTABLE", b"INVOKER", b"DEFINER", b"SQL", b"SECURITY", b"ALGORITHM", b"LOCK",
     b"NONE", b"SHARED", b"EXCLUSIVE", b"DEFAULT", b"INPLACE", b"COPY", b"INSTANT",
     b"NOCOPY")
)
_DDL_OBJECTS = {
    b"TABLE": "table", b"TABLES": "table", b"DATABASE": "database", b"SCHEMA": "database",
    b"INDEX": "index", b"VIEW": "view", b"PROCEDURE": "procedure", b"FUNCTION": "function",
    b"TRIGGER": "trigger", b"EVENT": "event", b"USER": "user", b"ROLE": "role",
    b"SERVER": "server", b"TABLESPACE": "tablespace", b"SEQUENCE": "sequence",
    b"LOGFILE": "logfile", b"PACKAGE": "package", b"RESOURCE": "resource_group",
    b"SPATIAL": "spatial_reference_system", b"INSTANCE": "instance", b"PREPARE": "prepare",
}
_SIMPLE_KINDS = {
    b"INSERT": "insert", b"REPLACE": "replace", b"UPDATE": "update", b"DELETE": "delete",
    b"SELECT": "select", b"TABLE": "select", b"VALUES": "select", b"GRANT": "grant",
    b"REVOKE": "revoke", b"CALL": "call", b"HANDLER": "handler", b"KILL": "kill",
    b"SHUTDOWN": "shutdown", b"RESTART": "restart", b"SHOW": "show", b"DESCRIBE": "explain",
    b"DESC": "explain", b"USE": "use", b"BEGIN": "transaction", b"COMMIT": "transaction",
    b"ROLLBACK": "transaction", b"SAVEPOINT": "transaction", b"RELEASE": "transaction",
    b"XA": "transaction", b"UNLOCK": "unlock_tables", b"FLUSH": "flush", b"RESET": "reset",
    b"PURGE": "purge", b"INSTALL": "install_plugin", b"UNINSTALL": "uninstall_plugin",
    b"OPTIMIZE": "maintenance", b"CHECK": "maintenance", b"REPAIR": "maintenance",
    b"CHECKSUM": "maintenance", b"DO": "do", b"HELP": "help", b"BINLOG": "binlog",
    b"CACHE": "cache_index", b"CLONE": "clone", b"IMPORT": "import_table",
    b"GET": "diagnostics", b"SIGNAL": "signal", b"RESIGNAL": "signal", b"BACKUP": "backup",
    b"TRUNCATE": "truncate", b"DEALLOCATE": "deallocate", b"PREPARE": "prepare",
}
# Kinds whose rules need sqlglot's facts (tables, WHERE, LIMIT): unparsable means unread.
_NEEDS_PARSE = frozenset(("select", "insert", "replace", "update", "delete"))
# Kinds sqlglot is asked for tables when it can parse them (best effort otherwise).
_TABLES_FROM_PARSE = frozenset(
    ("drop_table", "create_table", "alter_table", "truncate", "create_view", "drop_view",
     "alter_view", "create_index", "drop_index")
)
_ANALYZE_RUNS = frozenset((b"SELECT", b"UPDATE", b"DELETE", b"INSERT", b"REPLACE", b"WITH"))
_DELETE_MODIFIERS = frozenset((b"LOW_PRIORITY", b"QUICK", b"IGNORE"))
_SET_SCOPES = {
    b"GLOBAL": "global", b"SESSION": "session", b"LOCAL": "session", b"PERSIST": "persist",
    b"PERSIST_ONLY": "persist_only",
}
_SET_KINDS = {
    b"PASSWORD": "set_password", b"ROLE": "set_role", b"NAMES": "set_names",
    b"CHARSET": "set_names", b"TRANSACTION": "set_transaction", b"STATEMENT": "set_statement",
}
_INTO_FILE = frozenset((b"OUTFILE", b"DUMPFILE"))
# Words that take parentheses but call nothing (a word before "(" is otherwise a call).
_NOT_CALLS = frozenset(
    (b"IN", b"VALUES", b"VALUE", b"AS", b"EXISTS", b"USING", b"ON", b"INTO", b"TABLE",
     b"FROM", b"JOIN", b"WHERE", b"AND", b"OR", b"NOT", b"SELECT", b"KEY", b"INDEX",
     b"PRIMARY", b"UNIQUE", b"PARTITION", b"OVER", b"ROW", b"ALL", b"ANY", b"SOME",
     b"WITH", b"RETURNS", b"OPTIONS", b"BY", b"UNION", b"LATERAL", b"IF", b"THEN", b"ELSE",
     b"WHEN", b"CASE", b"SET", b"DEFAULT", b"CHECK", b"REFERENCES", b"FOREIGN", b"LIMIT")
)


# Every kind ``analyse`` can report (and the gateway, for commands such as COM_DROP_DB):
# what rules may name (hoopy.config.guardrails checks them).
KINDS = frozenset(
    {*_SIMPLE_KINDS.values(), *_SET_KINDS.values()}
    | {f"{verb}_{obj}" for verb in ("create", "alter", "drop") for obj in
       {*_DDL_OBJECTS.values(), "unknown"} if obj != "prepare"}
    | {"rename_user", "rename_table", "load_data", "load_index", "set", "set_default_role",
       "set_transaction", "transaction", "replication", "lock_tables", "execute",
       "execute_immediate", "deallocate", "maintenance", "explain", "unknown", "empty",
       "debug"}
)


class _Words:
    """A statement's code tokens as upper-case words (None for anything that is not a word)."""

    def __init__(self, data: bytes, tokens: Sequence[Token]) -> None:
        self.data = data
        self.tokens = tokens
        self.words = [
            bytes(data[t.start : t.end]).upper() if t.kind is WORD else None for t in tokens
        ]

    def word(self, i: int) -> bytes | None:
        return self.words[i] if 0 <= i < len(self.words) else None

    def punct(self, i: int) -> bytes | None:
        if 0 <= i < len(self.tokens) and self.tokens[i].kind is PUNCT:
            t = self.tokens[i]
            return bytes(self.data[t.start : t.end])
        return None


def _ddl_kind(verb: str, w: _Words, i: int) -> str:
    """CREATE|ALTER|DROP [OR REPLACE] [DEFINER = user] [ALGORITHM = x] ... <object>."""
    while i < len(w.tokens):
        word = w.word(i)
        if w.punct(i - 1) in (b"=", b"@") or word is None:
            i += 1  # DEFINER = `user`@`host`, ALGORITHM = MERGE, and their punctuation
            continue
        if word in _DDL_OBJECTS and not (word == b"SPATIAL" and w.word(i + 1) == b"INDEX"):
            return f"{verb}_{_DDL_OBJECTS[word]}"
        if word in _DDL_SKIP or word == b"CURRENT_USER" or w.punct(i + 1) == b"=":
            i += 1
            continue
        break
    return f"{verb}_unknown"


_EXPLAIN_FLAGS = frozenset((b"EXTENDED", b"PARTITIONS"))


def _skip_explain_options(w: _Words, j: int) -> int:
    """Past EXPLAIN's and ANALYZE's options: FORMAT = name, EXTENDED, PARTITIONS."""
    while True:
        if w.word(j) == b"FORMAT" and w.punct(j + 1) == b"=":
            j += 3
        elif w.word(j) in _EXPLAIN_FLAGS:
            j += 1
        else:
            return j


_ANALYZE_TABLE = frozenset((b"TABLE", b"TABLES", b"NO_WRITE_TO_BINLOG", b"LOCAL"))


def _statement_run_by(w: _Words, j: int) -> tuple[str, int]:
    """The statement an ANALYZE runs: the first statement keyword after its options (which
    grow: FORMAT=, INTO @v, FOR SCHEMA s), or unknown."""
    while j < len(w.tokens):
        if w.word(j) in _ANALYZE_RUNS or (
            w.punct(j) == b"(" and w.word(j + 1) in (b"SELECT", b"WITH", b"TABLE", b"VALUES")
        ):
            return _kind(w, j)
        j += 1
    return "unknown", j


def _kind(w: _Words, start: int = 0) -> tuple[str, int]:
    """The statement's kind, and the index of the token its body starts at."""
    i = start
    while w.punct(i) == b"(":  # (SELECT ...) UNION (SELECT ...)
        i += 1
    first = w.word(i)
    if first is None:
        return "unknown", i
    second = w.word(i + 1)
    if first == b"DROP" and second == b"PREPARE":
        return "deallocate", i
    if first in (b"CREATE", b"ALTER", b"DROP"):
        return _ddl_kind(first.decode().lower(), w, i + 1), i
    if first == b"RENAME":
        return ("rename_user" if second == b"USER" else "rename_table"), i
    if first == b"LOAD":
        if second in (b"DATA", b"XML"):
            return "load_data", i
        return "load_index", i
    if first == b"SET":
        scope = second
        j = i + 1
        if scope in _SET_SCOPES:
            j += 1
        word = w.word(j)
        if word == b"DEFAULT" and w.word(j + 1) == b"ROLE":
            return "set_default_role", i
        if word == b"CHARACTER" and w.word(j + 1) == b"SET":
            return "set_names", i
        if word in _SET_KINDS:  # SET PASSWORD [FOR user] = ..., SET NAMES ..., ...
            return _SET_KINDS[word], i
        return "set", i
    if first == b"START":
        if second == b"TRANSACTION":
            return "transaction", i
        return "replication", i  # START SLAVE / REPLICA / GROUP_REPLICATION
    if first == b"STOP" or first == b"CHANGE":
        return "replication", i
    if first == b"LOCK":
        return "lock_tables", i
    if first == b"WITH":
        return "with", i  # resolved from the parse
    if first == b"EXECUTE":
        return ("execute_immediate" if second == b"IMMEDIATE" else "execute"), i
    if first == b"ANALYZE":
        # MariaDB: ANALYZE [FORMAT=JSON] <statement> runs the statement; ANALYZE TABLE is
        # maintenance.
        if second in _ANALYZE_TABLE:
            return "maintenance", i
        return _statement_run_by(w, i + 1)
    if first in (b"EXPLAIN", b"DESCRIBE", b"DESC"):
        # MySQL: EXPLAIN ANALYZE [FORMAT=...] [INTO @v] [FOR SCHEMA s] <statement> runs it
        # too (and MariaDB takes EXPLAIN ANALYZE for ANALYZE); plain EXPLAIN does not.
        j = _skip_explain_options(w, i + 1)
        if w.word(j) == b"ANALYZE":
            return _statement_run_by(w, j + 1)
        return "explain", i
    kind = _SIMPLE_KINDS.get(first)
    if kind is None:
        return "unknown", i
    return kind, i


# -- the code text given to sqlglot ------------------------------------------------------------


def _code_text(
    data: bytes, tokens: Sequence[Token], skip: frozenset[int], rename: dict[int, str]
) -> str:
    """The statement's code as sqlglot should read it: tokens joined by single spaces,
    strings as '?', ``"..."`` identifiers backquoted."""
    parts: list[str] = []
    prev_end = -1
    for index, t in enumerate(tokens):
        if index in skip:
            continue
        if index in rename:
            text = rename[index]
        elif t.kind is STRING:
            text = "'?'"
        elif t.kind is QIDENT:
            body = bytes(data[t.body_start : t.body_end]).decode("utf-8", "replace")
            quote = chr(data[t.start])
            body = body.replace(quote + quote, quote).replace("`", "``")
            text = f"`{body}`"
        else:
            text = bytes(data[t.start : t.end]).decode("utf-8", "replace")
        # Keep "a.b", "@@x" and "f(" together: sqlglot reads "a . b" but not every split.
        if parts and t.start != prev_end:
            parts.append(" ")
        parts.append(text)
        prev_end = t.end
    return "".join(parts)


def _normalized(data: bytes, tokens: Sequence[Token]) -> str:
    parts = []
    for t in tokens:
        if t.kind is WORD:
            parts.append(bytes(data[t.start : t.end]).decode("utf-8", "replace").upper())
        elif t.kind in (STRING, "number", "hex", "bit"):
            parts.append("?")
        elif t.kind is QIDENT:
            parts.append(
                "`" + bytes(data[t.body_start : t.body_end]).decode("utf-8", "replace") + "`"
            )
        else:
            parts.append(bytes(data[t.start : t.end]).decode("utf-8", "replace"))
    return " ".join(parts)


# -- facts -------------------------------------------------------------------------------------


def _functions(w: _Words) -> frozenset[str]:
    found = set()
    for i, word in enumerate(w.words):
        if w.punct(i + 1) != b"(":
            continue
        if word is not None:
            if word not in _NOT_CALLS:
                found.add(word.decode("utf-8", "replace"))
        elif w.tokens[i].kind is QIDENT:  # `sys_exec`('id') calls a UDF or stored function
            found.add(_name_at(w, i).upper())
    return frozenset(found)


def _into_file(w: _Words) -> bool:
    return any(
        word == b"INTO" and w.word(i + 1) in _INTO_FILE for i, word in enumerate(w.words)
    )


def _load_local(w: _Words, i: int) -> bool:
    j = i + 2
    while w.word(j) in (b"LOW_PRIORITY", b"CONCURRENT"):
        j += 1
    return w.word(j) == b"LOCAL"


def _set_variables(w: _Words, i: int) -> frozenset[Variable]:
    """SET [scope] name = expr, [scope] name = expr, ...: the names assigned."""
    found = set()
    depth = 0
    expecting = True
    j = i + 1
    scope = "session"
    n = len(w.tokens)
    while j < n:
        p = w.punct(j)
        if p == b"(":
            depth += 1
        elif p == b")":
            depth -= 1
        elif p == b"," and depth == 0:
            # The scope carries on to the next assignments until another is named (the
            # server's grammar keeps the option type across the list).
            expecting = True
        elif expecting and depth == 0:
            word = w.word(j)
            if word in _SET_SCOPES and w.punct(j + 1) != b"=":
                scope = _SET_SCOPES[word]
            elif p == b"@":
                if w.punct(j + 1) == b"@":  # @@scope.name or @@name
                    j += 2
                    name = _name_at(w, j)
                    if w.punct(j + 1) == b"." and _name_at(w, j + 2):
                        found.add(Variable(_SET_SCOPES.get(name.upper().encode(), name), _name_at(
                            w, j + 2).lower()))
                        j += 2
                    else:
                        found.add(Variable(scope, name.lower()))
                else:
                    found.add(Variable("user", _name_at(w, j + 1).lower()))
                    j += 1
                expecting = False
            elif word is not None or (j < n and w.tokens[j].kind is QIDENT):
                found.add(Variable(scope, _name_at(w, j).lower()))
                expecting = False
        j += 1
    return frozenset(found)


# Kinds whose statements may name tables that hoopy does not list (a rule on tables treats
# them as unknown); every other kind names none unless a subquery is in it.
_MAY_NAME_TABLES = frozenset(
    ("handler", "lock_tables", "maintenance", "call", "grant", "revoke", "rename_table",
     "truncate", "import_table", "cache_index", "load_index", "flush", "backup", "explain",
     "execute")
)
_SHOW_TABLE_WORDS = frozenset(
    (b"FROM", b"IN", b"CREATE", b"COLUMNS", b"FIELDS", b"INDEX", b"INDEXES", b"KEYS", b"TABLE")
)


# Kinds that name tables only inside subqueries (SET is handled with its variables).
_SUBQUERY_ONLY = frozenset(
    ("do", "set_password", "set_role", "set_default_role", "kill", "transaction", "signal")
)


# Variables that change how the server reads the client's bytes.
_CHARSET_VARIABLES = frozenset(("character_set_client", "character_set_connection"))


def _charset_named(w: _Words, at: int, variables: frozenset[Variable]) -> str:
    """SET NAMES x / SET CHARACTER SET x / SET CHARSET x: the name (lower case), or "?"."""
    j = at + 1
    while w.word(j) in (b"SESSION", b"LOCAL", b"CHARACTER", b"SET", b"NAMES", b"CHARSET"):
        j += 1
        if w.word(j - 1) in (b"NAMES", b"CHARSET") or (
            w.word(j - 1) == b"SET" and w.word(j - 2) == b"CHARACTER"
        ):
            break
    name = _name_at(w, j).lower()
    if not name or name == "default" or any(v.name in _CHARSET_VARIABLES for v in variables):
        return "?"
    return name


def _subquery_tables(
    data: bytes, tokens: Sequence[Token], w: _Words
) -> tuple[frozenset[TableRef], bool]:
    """The tables a statement hoopy does not parse for them names in its subqueries (SET @x
    = (SELECT ...), DO (SELECT ...)): (tables, whether that is all of them)."""
    if not any(word in (b"SELECT", b"TABLE") for word in w.words):
        return frozenset(), True
    tree = _parse(_code_text(data, tokens, frozenset(), {}))
    if tree is None:
        return frozenset(), False
    from sqlglot import exp

    assert isinstance(tree, exp.Expression)
    tables = frozenset(
        TableRef(t.db or None, t.name) for t in tree.find_all(exp.Table) if t.name
    )
    return tables, bool(tables) or not any(word == b"FROM" for word in w.words)


def _may_name_tables(kind: str, w: _Words) -> bool:
    if kind in _MAY_NAME_TABLES or kind.startswith(("create_", "alter_", "drop_")):
        return True
    if kind == "show":
        return any(word in _SHOW_TABLE_WORDS for word in w.words)
    return any(word in (b"SELECT", b"TABLE") for word in w.words)


def _after_top_level(w: _Words, i: int, keyword: bytes) -> int | None:
    """The index after the first ``keyword`` outside parentheses, from ``i`` on."""
    depth = 0
    for j in range(i, len(w.tokens)):
        p = w.punct(j)
        if p == b"(":
            depth += 1
        elif p == b")":
            depth -= 1
        elif depth == 0 and w.word(j) == keyword and w.word(j - 1) != b"VALUE":
            # (NEXT VALUE FOR seq and PREVIOUS VALUE FOR seq name a sequence.)
            return j + 1 if j + 1 < len(w.tokens) else None
    return None


def _name_at(w: _Words, j: int) -> str:
    if not 0 <= j < len(w.tokens):
        return ""
    t = w.tokens[j]
    if t.kind in (QIDENT, STRING):
        return bytes(w.data[t.body_start : t.body_end]).decode("utf-8", "replace")
    return bytes(w.data[t.start : t.end]).decode("utf-8", "replace")


def _parse(text: str) -> object | None:
    """sqlglot's tree for one statement, or None when it cannot parse it."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    try:
        trees = sqlglot.parse(text, read="mysql")
    except SqlglotError:
        return None
    except Exception:  # sqlglot fails on odd input in other ways too: a fact, not a crash
        return None
    if len(trees) != 1 or trees[0] is None or isinstance(trees[0], exp.Command):
        return None
    return trees[0]


def _tree_facts(tree: object) -> tuple[str | None, frozenset[TableRef], str | None, bool]:
    """(kind for WITH, tables, where, limit) from sqlglot's tree."""
    from sqlglot import exp

    assert isinstance(tree, exp.Expression)
    # Common table expressions' names are kept as tables: which references a CTE shadows
    # depends on scoping (inside a non-recursive CTE its own name is the real table), and
    # naming one table too many only makes table rules match more.
    tables = set()
    for t in tree.find_all(exp.Table):
        if not t.name:
            continue
        if isinstance(t.parent, exp.Into):  # SELECT ... INTO @variable
            continue
        tables.add(TableRef(t.db or None, t.name))
    kind = None
    if isinstance(tree, exp.Delete):
        kind = "delete"
    elif isinstance(tree, exp.Update):
        kind = "update"
    elif isinstance(tree, exp.Insert):
        kind = "insert"
    elif isinstance(tree, (exp.Select, exp.Union, exp.Intersect, exp.Except)):
        kind = "select"
    where = None
    limit = False
    if isinstance(tree, (exp.Delete, exp.Update)):
        condition = tree.args.get("where")
        if condition is None:
            where = "missing"
        else:
            where = "trivial" if _trivial(condition.this) else "present"
        limit = tree.args.get("limit") is not None
    elif isinstance(tree, exp.Query):
        limit = tree.args.get("limit") is not None
    return kind, frozenset(tables), where, limit


# Functions the server calls without parentheses, which sqlglot may read as columns.
_NILADIC = frozenset(
    ("current_date", "current_time", "current_timestamp", "current_user", "current_role",
     "localtime", "localtimestamp", "utc_date", "utc_time", "utc_timestamp")
)


def _columns(condition: object) -> bool:
    """Whether a row's value can decide ``condition`` (a real column in it)."""
    from sqlglot import exp

    assert isinstance(condition, exp.Expression)
    return any(
        not (not c.table and c.name.lower() in _NILADIC) for c in condition.find_all(exp.Column)
    )


def _trivial(condition: object) -> bool:
    from sqlglot import exp

    assert isinstance(condition, exp.Expression)
    if isinstance(condition, exp.Paren):
        return _trivial(condition.this)
    if not _columns(condition):
        return True  # constant: no row decides it
    if isinstance(condition, exp.Or):
        return _trivial(condition.this) or _trivial(condition.expression)
    if isinstance(condition, exp.And):
        return _trivial(condition.this) and _trivial(condition.expression)
    if isinstance(condition, (exp.EQ, exp.NullSafeEQ, exp.GTE, exp.LTE, exp.Like)):
        return _same(condition.this, condition.expression)
    if isinstance(condition, exp.Is) and isinstance(condition.expression, exp.Null):
        return False
    return False


@dataclass(frozen=True, slots=True)
class _Common:
    """The facts every kind of statement has."""

    functions: frozenset[str]
    text: str

    def fields(self) -> dict[str, Any]:
        return {"functions": self.functions, "text": self.text}


def _same(a: object, b: object) -> bool:
    """Whether two expressions are the same column or expression, as the server compares
    names: column, table and schema names case-insensitively (``id = ID``), and a column
    one side leaves unqualified as the same as the other side's (``t.id = id``)."""
    from sqlglot import exp

    assert isinstance(a, exp.Expression) and isinstance(b, exp.Expression)
    while isinstance(a, exp.Paren):
        a = a.this
    while isinstance(b, exp.Paren):
        b = b.this
    if isinstance(a, exp.Column) and isinstance(b, exp.Column):
        if a.name.lower() != b.name.lower():
            return False
        qa, qb = a.table.lower(), b.table.lower()
        return not qa or not qb or qa == qb
    # Literals compare as equal: texts of one shape (literals replaced) must get one
    # analysis, so id + 0 = id + 1 is read like id + 0 = id + 0 (trivial, refused).
    return _literal_blind(a) == _literal_blind(b)


def _literal_blind(e: object) -> str:
    from sqlglot import exp

    assert isinstance(e, exp.Expression)
    blind = e.transform(
        lambda n: exp.Placeholder() if isinstance(n, (exp.Literal, exp.Placeholder)) else n
    )
    return str(blind.sql(dialect="mysql")).lower()


def _statement(data: bytes, tokens: list[Token], reading: Reading, depth: int) -> StatementFacts:
    w = _Words(data, tokens)
    kind, at = _kind(w)
    common = _Common(_functions(w), _normalized(data, tokens))
    if kind == "unknown":
        return StatementFacts("unknown", parsed=False, tables_known=False, **common.fields())
    if kind == "load_data":
        return StatementFacts(kind, local=_load_local(w, at), tables_known=False, **common.fields())
    if kind == "set_statement":
        # MariaDB: SET STATEMENT var = value [, ...] FOR <statement> runs the statement.
        inner = _after_top_level(w, at, b"FOR")
        if inner is None:
            return StatementFacts(kind, parsed=False, tables_known=False, **common.fields())
        facts = _statement(data, tokens[inner:], reading, depth)
        assigned = _set_variables(_Words(data, tokens[: inner - 1]), at + 1)
        return replace(facts, variables=facts.variables | assigned)
    if kind == "set_names":
        # SET NAMES x [COLLATE y], <more assignments>: the grammar's list goes on.
        variables = _set_variables(w, at) - {Variable("session", "names"),
                                             Variable("session", "character")}
        tables, known = _subquery_tables(data, tokens, w)
        charset = _charset_named(w, at, variables)
        return StatementFacts(
            kind, variables=variables, tables=tables, tables_known=known, charset=charset,
            **common.fields(),
        )
    if kind == "set_transaction":
        scope = _SET_SCOPES.get(w.word(at + 1) or b"", "session")
        variable = frozenset((Variable(scope, "transaction"),))
        return StatementFacts(kind, variables=variable, **common.fields())
    if kind == "set":
        variables = _set_variables(w, at)
        tables, known = _subquery_tables(data, tokens, w)
        switched = "?" if any(v.name in _CHARSET_VARIABLES for v in variables) else None
        return StatementFacts(
            kind, variables=variables, tables=tables, tables_known=known, charset=switched,
            **common.fields(),
        )
    if kind == "use":
        return StatementFacts(kind, database=_name_at(w, at + 1), **common.fields())
    if kind in ("prepare", "execute_immediate"):
        return _dynamic(data, w, kind, at, reading, depth, common)
    if kind not in _NEEDS_PARSE and kind != "with" and kind not in _TABLES_FROM_PARSE:
        if kind in _SUBQUERY_ONLY:  # DO (SELECT ...): its tables are its subqueries'
            tables, known = _subquery_tables(data, tokens, w)
            return StatementFacts(kind, tables=tables, tables_known=known, **common.fields())
        if _may_name_tables(kind, w):  # SHOW COLUMNS FROM t, HANDLER t, LOCK TABLES t
            return StatementFacts(kind, tables_known=False, **common.fields())
        return StatementFacts(kind, **common.fields())
    begin = at
    while begin > 0 and w.punct(begin - 1) == b"(":  # ANALYZE (SELECT ...): keep the parens
        begin -= 1
    skip = set(range(begin))  # ANALYZE, EXPLAIN ANALYZE: parse the statement they run
    rename = {}
    if kind == "delete":
        j = at + 1
        while w.word(j) in _DELETE_MODIFIERS:  # sqlglot reads DELETE IGNORE only
            skip.add(j)
            j += 1
    elif kind == "replace" and w.word(at) == b"REPLACE":
        rename[at] = "INSERT"  # the same grammar; sqlglot's MySQL dialect has no REPLACE
    tree = _parse(_code_text(data, tokens, frozenset(skip), rename))
    if tree is None:
        parsed = kind not in _NEEDS_PARSE and kind != "with"
        return StatementFacts(
            kind, parsed=parsed, tables_known=False, into_file=_into_file(w), **common.fields()
        )
    tree_kind, tables, where, limit = _tree_facts(tree)
    if kind == "with":
        kind = tree_kind or "unknown"
    return StatementFacts(
        kind,
        parsed=kind != "unknown",
        tables=tables,
        where=where,
        limit=limit,
        into_file=_into_file(w),
        **common.fields(),
    )


def _dynamic(
    data: bytes,
    w: _Words,
    kind: str,
    at: int,
    reading: Reading,
    depth: int,
    common: _Common,
) -> StatementFacts:
    """PREPARE name FROM <text>, EXECUTE IMMEDIATE <text>: analyse the text when it is a
    string literal (the server prepares exactly its value)."""
    source = at + 3 if kind == "prepare" else at + 2
    tokens = w.tokens
    literal = (
        source == len(tokens) - 1
        and tokens[source].kind is STRING
        and (kind != "prepare" or w.word(at + 2) == b"FROM")
    )
    if not literal or depth >= _MAX_DYNAMIC_DEPTH:
        return StatementFacts(kind, dynamic_unknown=True, tables_known=False, **common.fields())
    inner = string_value(data, tokens[source], reading)
    analysis = _analyse(inner, reading.server, depth + 1)
    return StatementFacts(kind, dynamic=analysis.statements, tables_known=False, **common.fields())


# PREPARE s FROM 'PREPARE t FROM ''...''' nests; past this, the text counts as unknown.
_MAX_DYNAMIC_DEPTH = 3


def _readings(text: bytes, server: ServerVersion | None, multibyte: bool) -> list[Reading]:
    """The lexer's readings, and with a double quote in the text the ANSI_QUOTES ones too:
    the lexer needs them only where token boundaries differ, the analysis wherever ``"``
    makes an identifier (a table, a column in WHERE) instead of a string."""
    readings = list(readings_for(text, server, multibyte=multibyte))
    if contains(text, b'"'):
        for r in list(readings):
            ansi = replace(r, ansi_quotes=True)
            if ansi not in readings:
                readings.append(ansi)
    return readings


def analyse(
    text: bytes, server: ServerVersion | None = None, *, multibyte: bool = False
) -> Analysis:
    """Every statement of ``text`` under every reading (see the module docstring).
    ``multibyte``: the session's client character set is, or may be, one of
    ``MULTIBYTE_CHARSETS``."""
    return _analyse(text, server, 0, multibyte)


def _analyse(
    text: bytes, server: ServerVersion | None, depth: int, multibyte: bool = False
) -> Analysis:
    seen: dict[StatementFacts, None] = {}
    primary: tuple[StatementFacts, ...] = ()
    uses: set[str | None] = set()
    for n, reading in enumerate(_readings(text, server, multibyte)):
        data = text if reading.multibyte is None else masked(text, reading.multibyte)
        code = (t for t in tokenize(text, reading) if t.kind not in _COMMENTS)
        facts = tuple(
            _judgeable(data, tokens, reading, depth) for tokens in statements(data, code)
        )
        if n == 0:
            primary = facts
        use = None
        for statement in facts:
            if statement.kind == "use":
                use = statement.database or "?"
        uses.add(use)
        for f in facts:
            seen.setdefault(f)
    if not seen:
        empty = StatementFacts("empty", tables_known=True)
        return Analysis((empty,), (empty,))
    every = tuple(all_statements_of(tuple(seen)))
    local = any(f.local for f in every)
    charsets = frozenset(f.charset for f in every if f.charset is not None)
    if len(uses) > 1 or "?" in uses:
        # The readings disagree on where a USE leaves the session (USE /*!99999 a */ b):
        # the database is unknown afterwards.
        return Analysis(tuple(seen), primary, None, local, True, charsets)
    return Analysis(tuple(seen), primary, uses.pop(), local, False, charsets)


def _judgeable(data: bytes, tokens: list[Token], reading: Reading, depth: int) -> StatementFacts:
    """``_statement``, or an unread statement where reading it ran too deep (thousands of
    nested conditions): a fact, not a crash."""
    try:
        return _statement(data, tokens, reading, depth)
    except RecursionError:
        return StatementFacts("unknown", parsed=False, tables_known=False, text="<too deep>")


# -- the cache ---------------------------------------------------------------------------------

# A text whose shape is computed needs a single reading: no backslash (escapes differ between
# readings), no double quote (ANSI_QUOTES), no comment (executable ones differ by server), and
# nothing whose string literal is itself SQL (PREPARE ... FROM '...', EXECUTE IMMEDIATE).
_QUOTED = re.compile(rb"'(?>(?:[^']|'')*)'|`(?>(?:[^`]|``)*)`")
_OUTSIDE_UNSAFE = re.compile(rb"['`#]|--|/\*")
# Any of these sends shape() down its careful path (quotes) or out (backslash, ", comments,
# NUL: the byte that marks a literal in a shape, so no text's own bytes can look like one).
_MAYBE_UNSAFE = re.compile(rb"[\"\\\\'`#\x00]|--|/\*")
_MARK = b"\x00"
_NUMBER = rb"(?<![0-9A-Za-z_$.\x80-\xff])[0-9]++(?:\.[0-9]++)?(?![0-9A-Za-z_$\x80-\xff])"
_NUMBERS = re.compile(_NUMBER)
_LITERALS = re.compile(rb"`(?>(?:[^`]|``)*)`|'(?>(?:[^']|'')*)'|" + _NUMBER)


def _literal_out(m: re.Match[bytes]) -> bytes:
    text = m.group(0)
    return text if text[0] == 96 else _MARK  # a backquoted identifier stays


def shape(text: bytes) -> bytes | None:
    """The text with its string and number literals replaced by a NUL byte, when that is certain
    to keep every fact ``analyse`` reports (None otherwise): statements of one shape have one
    analysis. A literal is only replaced where every reading agrees it is one: the text has
    a single reading (no backslash: escapes differ between readings; no double quote:
    ANSI_QUOTES; no comment: executable ones differ by server), and nothing in it is SQL
    inside a string (PREPARE ... FROM '...', EXECUTE IMMEDIATE '...')."""
    if _MAYBE_UNSAFE.search(text) is None:  # most statements: one scan, then the numbers
        low = text.lower()
        if b"prepare" in low or b"immediate" in low:
            return None
        return _NUMBERS.sub(_MARK, text)
    if b'"' in text or b"\\" in text or b"\x00" in text:
        return None
    low = text.lower()
    if b"prepare" in low or b"immediate" in low:
        return None
    if b"'" in text or b"`" in text:
        # Every quote opens what the server reads as a literal or an identifier only if no
        # comment starts before it: so no comment may start outside them.
        if _OUTSIDE_UNSAFE.search(_QUOTED.sub(b" ", text)) is not None:
            return None
        return _LITERALS.sub(_literal_out, text)
    return None  # a comment


class Analyser:
    """``analyse`` for one target's server version, with a cache: by shape when the text has
    one, else by the exact text (short texts only). Shared by every session on targets of
    that version (analyses are immutable). Full, the oldest entry makes room (first in,
    first out: no bookkeeping on a hit)."""

    def __init__(
        self,
        server: ServerVersion | None = None,
        size: int = 4096,
        max_text: int = 4096,
        *,
        multibyte: bool = False,
    ) -> None:
        self.server = server
        self.multibyte = multibyte  # analyse(..., multibyte=True): see MULTIBYTE_CHARSETS
        self.size = size
        self.max_text = max_text
        self._shapes: dict[bytes, Analysis] = {}
        self._texts: dict[bytes, Analysis] = {}
        self.hits = 0
        self.misses = 0

    def __call__(self, text: bytes) -> Analysis:
        if len(text) > self.max_text:
            self.misses += 1
            return analyse(text, self.server, multibyte=self.multibyte)
        # A multibyte character set reads non-ASCII bytes in pairs the shape does not see.
        key = None if self.multibyte and not text.isascii() else shape(text)
        cache = self._shapes
        if key is None:
            key = bytes(text)
            cache = self._texts
        found = cache.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        result = analyse(text, self.server, multibyte=self.multibyte)
        if len(cache) >= self.size:
            del cache[next(iter(cache))]
        cache[key] = result
        return result


def all_statements(analysis: Analysis) -> Iterator[StatementFacts]:
    """Every statement, the texts of dynamic SQL included (depth first)."""
    return all_statements_of(analysis.statements)


def all_statements_of(statements: Iterable[StatementFacts]) -> Iterator[StatementFacts]:
    stack: list[Iterable[StatementFacts]] = [statements]
    while stack:
        for facts in stack.pop():
            yield facts
            if facts.dynamic:
                stack.append(facts.dynamic)

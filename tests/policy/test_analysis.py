"""The statement analysis and the rules, without I/O: kinds, facts, the shape cache's
soundness, and generated evasions of denied statements under the built-in set."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hoopy.config.guardrails import builtin_sets
from hoopy.policy.analysis import KINDS, Analyser, analyse, shape
from hoopy.policy.rules import Action, Policy, Rule, RuleSet
from hoopy.sql.lexer import ServerVersion

DEFAULT = Policy((builtin_sets()["default"],))
MARIADB = ServerVersion(True, 101106)
MYSQL = ServerVersion(False, 80036)


def verdict(sql: str, server: ServerVersion | None = None, database: str | None = "db") -> str:
    return DEFAULT.judge(analyse(sql.encode(), server), database).action.word


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("SELECT 1", "select"),
        ("(SELECT 1) UNION (SELECT 2)", "select"),
        ("TABLE t", "select"),
        ("INSERT INTO t VALUES (1)", "insert"),
        ("REPLACE INTO t VALUES (1)", "replace"),
        ("UPDATE t SET a = 1 WHERE id = 2", "update"),
        ("DELETE FROM t WHERE id = 2", "delete"),
        ("WITH x AS (SELECT 1) DELETE FROM t WHERE id = 1", "delete"),
        ("CREATE OR REPLACE DEFINER = `u`@`h` SQL SECURITY INVOKER VIEW v AS SELECT 1", "create_view"),
        ("CREATE UNIQUE INDEX i ON t (a)", "create_index"),
        ("CREATE TEMPORARY TABLE t (a INT)", "create_table"),
        ("DROP TEMPORARY TABLE IF EXISTS t", "drop_table"),
        ("ALTER ONLINE TABLE t ADD c INT", "alter_table"),
        ("DROP DATABASE d", "drop_database"),
        ("DROP SCHEMA d", "drop_database"),
        ("CREATE USER u", "create_user"),
        ("RENAME USER a TO b", "rename_user"),
        ("RENAME TABLE a TO b", "rename_table"),
        ("GRANT SELECT ON *.* TO u", "grant"),
        ("SET PASSWORD FOR u = 'x'", "set_password"),
        ("SET NAMES utf8mb4", "set_names"),
        ("SET CHARACTER SET utf8", "set_names"),
        ("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", "set_transaction"),
        ("SET DEFAULT ROLE r TO u", "set_default_role"),
        ("SET autocommit = 1", "set"),
        ("LOAD DATA LOCAL INFILE 'f' INTO TABLE t", "load_data"),
        ("LOAD XML INFILE 'f' INTO TABLE t", "load_data"),
        ("HANDLER t OPEN", "handler"),
        ("KILL QUERY 5", "kill"),
        ("SHUTDOWN", "shutdown"),
        ("PREPARE s FROM 'SELECT 1'", "prepare"),
        ("EXECUTE s USING @a", "execute"),
        ("EXECUTE IMMEDIATE 'SELECT 1'", "execute_immediate"),
        ("DEALLOCATE PREPARE s", "deallocate"),
        ("DROP PREPARE s", "deallocate"),
        ("CALL p(1)", "call"),
        ("SHOW TABLES", "show"),
        ("DESCRIBE t", "explain"),
        ("EXPLAIN SELECT 1", "explain"),
        ("EXPLAIN ANALYZE DELETE FROM t", "delete"),
        ("ANALYZE DELETE FROM t", "delete"),
        ("ANALYZE TABLE t", "maintenance"),
        ("SET STATEMENT max_statement_time = 1 FOR UPDATE t SET a = 1", "update"),
        ("START TRANSACTION", "transaction"),
        ("CHANGE MASTER TO MASTER_HOST = 'h'", "replication"),
        ("INSTALL PLUGIN p SONAME 'x.so'", "install_plugin"),
        ("TRUNCATE TABLE t", "truncate"),
        ("DO 1", "do"),
        ("FROBNICATE t", "unknown"),
    ],
)
def test_statement_kinds(sql: str, kind: str) -> None:
    assert [f.kind for f in analyse(sql.encode()).statements] == [kind]
    assert kind in KINDS  # what rules may name


@pytest.mark.parametrize(
    ("where", "fact"),
    [
        ("", "missing"),
        ("WHERE 1", "trivial"),
        ("WHERE 1 = 1", "trivial"),
        ("WHERE 1 = 0", "trivial"),  # constant either way: no row decides it
        ("WHERE TRUE", "trivial"),
        ("WHERE NOT FALSE", "trivial"),
        ("WHERE 1 IN (1)", "trivial"),
        ("WHERE @x", "trivial"),
        ("WHERE id = id", "trivial"),
        ("WHERE t.id <=> t.id", "trivial"),
        ("WHERE id = ID", "trivial"),
        ("WHERE t.id = id", "trivial"),
        ("WHERE LOWER(id) = lower(ID)", "trivial"),
        ("WHERE a.id = b.id", "present"),
        ("WHERE id = 1 OR 1", "trivial"),
        ("WHERE (id = 1) OR ('a' = 'a')", "trivial"),
        ("WHERE id = 1", "present"),
        ("WHERE id = 1 AND 1 = 1", "present"),
        ("WHERE id IN (SELECT id FROM u)", "present"),
    ],
)
def test_where_facts_of_delete(where: str, fact: str) -> None:
    (facts,) = analyse(f"DELETE FROM t {where}".encode()).statements
    assert facts.where == fact


def test_tables_are_schema_qualified_and_cte_names_count_as_tables() -> None:
    (facts,) = analyse(b"WITH c AS (SELECT * FROM a.x) SELECT * FROM c JOIN `b`.`y` JOIN z").statements
    # A CTE's name is listed too: inside a non-recursive CTE its own name is the real table,
    # and hoopy does not follow scopes, so it names one table too many rather than too few.
    assert {(t.schema, t.name) for t in facts.tables} == {
        ("a", "x"), ("b", "y"), (None, "z"), (None, "c")
    }


def test_ansi_quotes_reading_sees_double_quoted_names_as_tables() -> None:
    tables = {t.name for f in analyse(b'SELECT * FROM "customers"').statements for t in f.tables}
    assert "customers" in tables


def test_functions_are_found_through_comments_and_backquotes() -> None:
    (facts,) = analyse(b"SELECT sleep /* x */ (1), `sys_exec`('id'), db.f(2)").statements
    assert {"SLEEP", "SYS_EXEC", "F"} <= facts.functions


def test_set_variables_and_scopes() -> None:
    (facts,) = analyse(b"SET @@global.a = 1, GLOBAL b = 2, @u = (SELECT 1), c = 3, @@d = 4").statements
    # GLOBAL carries on through the list until another scope keyword (as the server's
    # grammar keeps its option type), so c and @@d are global too.
    assert {(v.scope, v.name) for v in facts.variables} == {
        ("global", "a"), ("global", "b"), ("user", "u"), ("global", "c"), ("global", "d")
    }
    (facts,) = analyse(b"SET GLOBAL a = 1, SESSION b = 2, c = 3").statements
    assert {(v.scope, v.name) for v in facts.variables} == {
        ("global", "a"), ("session", "b"), ("session", "c")
    }


def test_dynamic_sql_carries_its_text_or_says_it_is_unknown() -> None:
    (facts,) = analyse(b"PREPARE s FROM 'DELETE FROM t'").statements
    assert [d.kind for d in facts.dynamic] == ["delete"]
    (facts,) = analyse(b"PREPARE s FROM @q").statements
    assert facts.dynamic_unknown


def test_hostile_texts_give_an_analysis_never_an_exception() -> None:
    for text in [b"", b";;;", b"(((((", b"SELECT '", b"/*!", b"\xff\xfe", b"SELECT " + b"(" * 5000]:
        assert analyse(text).statements


# --- the built-in set -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "action"),
    [
        ("SELECT * FROM t WHERE id = 1", "allow"),
        ("DELETE FROM t WHERE id = 1", "allow"),
        ("DELETE FROM t", "deny"),
        ("UPDATE t SET a = 1 LIMIT 10", "deny"),
        ("DROP TABLE t", "deny"),
        ("TRUNCATE t", "deny"),
        ("CREATE TABLE t (a INT)", "review"),
        ("ALTER TABLE t ADD b INT", "review"),
        ("CREATE USER u", "deny"),
        ("GRANT ALL ON *.* TO u", "deny"),
        ("SET PASSWORD = 'x'", "deny"),
        ("LOAD DATA INFILE 'f' INTO TABLE t", "deny"),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", "deny"),
        ("SELECT SLEEP(1)", "deny"),
        ("SET GLOBAL x = 1", "deny"),
        ("SET PERSIST x = 1", "deny"),
        ("SET SESSION x = 1", "allow"),
        ("SHUTDOWN", "deny"),
        ("CREATE FUNCTION f RETURNS INT SONAME 'lib.so'", "deny"),
        ("CALL p()", "log"),
        ("KILL 5", "log"),
        ("PREPARE s FROM @q", "deny"),
        ("PREPARE s FROM 'DROP TABLE t'", "deny"),
        ("PREPARE s FROM 'SELECT 1'", "allow"),
        ("FROBNICATE", "deny"),
        ("ANALYZE FORMAT=JSON DELETE FROM t", "deny"),
        ("EXPLAIN ANALYZE FORMAT=TREE UPDATE t SET a = 1", "deny"),
        ("EXPLAIN FORMAT=JSON DELETE FROM t", "allow"),  # does not run it
        ("SET GLOBAL TRANSACTION ISOLATION LEVEL SERIALIZABLE", "deny"),
        ("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", "allow"),
        ("SET GLOBAL a = 1, b = 2", "deny"),
    ],
)
def test_default_set(sql: str, action: str) -> None:
    assert verdict(sql) == action


# --- generated evasions -----------------------------------------------------------------------

DENIED = [
    ["DELETE", "FROM", "t"],
    ["UPDATE", "t", "SET", "a", "=", "1"],
    ["DROP", "TABLE", "t"],
    ["TRUNCATE", "t"],
    ["GRANT", "ALL", "ON", "*.*", "TO", "u"],
    ["SELECT", "SLEEP", "(", "1", ")"],
    ["DELETE", "FROM", "t", "WHERE", "1", "=", "1"],
    ["DELETE", "FROM", "t", "WHERE", "id", "=", "id"],
    ["SHUTDOWN"],
]

_SEPARATORS = st.sampled_from([" ", "  ", "\t", "\n", "/**/", "/* x */", " -- c\n", " #c\n", "\r\n"])


def _case(word: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c.lower() for c, f in zip(word, flips + [False] * len(word), strict=False))


@st.composite
def disguised(draw: st.DrawFn) -> str:
    words = draw(st.sampled_from(DENIED))
    out = []
    for i, word in enumerate(words):
        if i:
            out.append(draw(_SEPARATORS))
        flips = draw(st.lists(st.booleans(), max_size=len(word)))
        word = _case(word, flips)
        if word.lower() == "t" and draw(st.booleans()):
            word = "`t`" if draw(st.booleans()) else "db.`t`"
        out.append(word)
    text = "".join(out)
    wrap = draw(st.sampled_from(["", "/*!{}*/", "/*!50000 {}*/", "/*M!100000 {}*/", "/*!{} */"]))
    if wrap:
        text = wrap.format(text)
    before = draw(st.sampled_from(["", "SELECT 1;", "SELECT 'a;b';", "/* c */", "SET @x = 1; "]))
    after = draw(st.sampled_from(["", ";", "; SELECT 1", " -- tail"]))
    return before + text + after


@settings(max_examples=400, deadline=None)
@given(disguised(), st.sampled_from([None, MARIADB, MYSQL]))
@example("/*!50000 DELETE FROM t*/", MYSQL)
@example("SELECT 1;/*M!100000 DROP TABLE t*/", MARIADB)
def test_generated_variants_of_denied_statements_stay_denied(
    sql: str, server: ServerVersion | None
) -> None:
    # The server may run the executable comment or not; either way nothing denied runs.
    assert verdict(sql, server) == "deny", sql


# --- the cache --------------------------------------------------------------------------------


@st.composite
def statement_with_literals(draw: st.DrawFn) -> tuple[str, str]:
    """Two statements that differ only in the values of their literals."""
    template = draw(
        st.sampled_from(
            [
                "DELETE FROM t WHERE id = {n} AND name = {s}",
                "DELETE FROM t WHERE {n} = {n}",
                "UPDATE t SET a = {n} WHERE {s} = {s} OR id = {n}",
                "SELECT * FROM `t{n}` WHERE x IN ({n}, {s}) LIMIT {n}",
                "SELECT {s}, {n} FROM t WHERE a LIKE {s}",
                "INSERT INTO t VALUES ({n}, {s})",
                "SET @x = {n}",
            ]
        )
    )
    numbers = st.integers(0, 10**6).map(str) | st.sampled_from(["1.5", "0", "00", "1e3"])
    strings = st.text(alphabet="ab '#-;*/`x", max_size=8).map(lambda s: "'" + s.replace("'", "''") + "'")
    fill = lambda: template.format(n=draw(numbers), s=draw(strings))  # noqa: E731
    return fill(), fill()


@settings(max_examples=300, deadline=None)
@given(statement_with_literals())
def test_statements_of_one_shape_have_one_analysis(pair: tuple[str, str]) -> None:
    a, b = (p.encode() for p in pair)
    if shape(a) is not None and shape(a) == shape(b):
        assert analyse(a).statements == analyse(b).statements, pair


@settings(max_examples=200, deadline=None)
@given(st.one_of(disguised(), statement_with_literals().map(lambda p: p[0])))
def test_the_cached_verdict_is_the_uncached_one(sql: str) -> None:
    analyser = Analyser()
    text = sql.encode()
    warm = analyser(b"SELECT 1 FROM t WHERE id = 5")  # a different statement first
    assert warm.statements
    first = DEFAULT.judge(analyser(text), "db")
    again = DEFAULT.judge(analyser(text), "db")
    assert first == again == DEFAULT.judge(analyse(text), "db")


def test_shape_is_refused_where_readings_could_differ() -> None:
    for text in [b"SELECT '\\'' -- '", b'SELECT "a"', b"SELECT 1 /*!50000 , 2*/", b"SELECT 1 # x",
                 b"PREPARE s FROM 'DELETE FROM t'", b"SELECT 1 -- x"]:
        assert shape(text) is None, text
    assert shape(b"SELECT `t1 2`, 'x' FROM t WHERE id = 7") == b"SELECT `t1 2`, \x00 FROM t WHERE id = \x00"
    # The mark is a byte no text with a shape contains: a ? of the text's own stays apart.
    assert shape(b"SELECT 0.?") != shape(b"SELECT ?.?")
    assert shape(b"SELECT \x00") is None


# --- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM customers",
        "SET @x = (SELECT email FROM customers LIMIT 1)",
        "DO (SELECT COUNT(*) FROM customers)",
        "SHOW COLUMNS FROM customers",
        "CALL p((SELECT 1 FROM customers))",
        "HANDLER customers OPEN",
        "PREPARE s FROM 'SELECT * FROM customers'",
    ],
)
def test_a_table_rule_sees_every_way_of_reading_a_table(sql: str) -> None:
    deny = RuleSet("s", (Rule("c", Action.DENY, tables=("db.customers",)),))
    assert Policy((deny,)).judge(analyse(sql.encode()), "db").action is Action.DENY


def test_unknown_facts_never_let_a_statement_through_a_deny_rule() -> None:
    deny = RuleSet("s", (Rule("c", Action.DENY, tables=("db.customers",)),), unparsed=Action.ALLOW)
    policy = Policy((deny,))
    # No current database: the unqualified table could be db.customers.
    assert policy.judge(analyse(b"SELECT * FROM customers"), None).action is Action.DENY
    assert policy.judge(analyse(b"SELECT * FROM customers"), "other").action is Action.ALLOW
    allow = RuleSet("a", (Rule("ok", Action.ALLOW, tables=("db.*",)),), default=Action.DENY)
    assert Policy((allow,)).judge(analyse(b"SELECT * FROM t"), None).action is Action.DENY
    assert Policy((allow,)).judge(analyse(b"SELECT * FROM t"), "db").action is Action.ALLOW


def test_first_match_wins_within_a_set_and_the_strictest_across_sets() -> None:
    first = RuleSet("f", (Rule("ok", Action.ALLOW, kinds=("delete",)), Rule("no", Action.DENY, kinds=("delete",))))
    assert Policy((first,)).judge(analyse(b"DELETE FROM t"), "db").action is Action.ALLOW
    logs = RuleSet("l", (Rule("flag", Action.LOG, kinds=("dml",)),))
    v = Policy((first, logs)).judge(analyse(b"DELETE FROM t"), "db")
    assert (v.action, v.rule) == (Action.LOG, "l/flag")


@st.composite
def load_statements(draw: st.DrawFn) -> str:
    words = ["LOAD", draw(st.sampled_from(["DATA", "XML", "data"])),
             draw(st.sampled_from(["", "LOW_PRIORITY", "CONCURRENT"])),
             draw(st.sampled_from(["LOCAL", "/*!LOCAL*/", "/*M!LOCAL*/", "/*!50000 LOCAL*/", "", "-- x\nLOCAL"])),
             "INFILE", "'f'", "INTO", "TABLE", "t"]
    text = draw(_SEPARATORS).join(w for w in words if w)
    before = draw(st.sampled_from(["", "SELECT 1;", "SET STATEMENT a = 1 FOR ", "/*!", "("]))
    return before + text + (" */" if before == "/*!" else ")" if before == "(" else "")


@settings(max_examples=300, deadline=None)
@given(load_statements(), st.sampled_from([None, MARIADB, MYSQL]))
def test_the_analysis_sees_every_local_infile_the_session_check_sees(
    sql: str, server: ServerVersion | None
) -> None:
    # With guardrails on, the session takes LOCAL INFILE from the analysis instead of
    # running hoopy.sql.checks: it must refuse at least what the check refuses.
    from hoopy.sql.checks import loads_local_file

    if loads_local_file(sql.encode(), server):
        assert analyse(sql.encode(), server).loads_local, sql


# --- what the security review of the guardrails found (each allowed before its fix) --------

TABLE_RULE = Policy((RuleSet("s", (Rule("c", Action.DENY, tables=("shop.customers",)),)),))


@pytest.mark.parametrize(
    ("sql", "server"),
    [
        ("SET NAMES utf8mb4, GLOBAL general_log = 1", None),
        ("SET CHARACTER SET utf8mb4, @@global.local_infile = 1", None),
        ("EXPLAIN ANALYZE FOR SCHEMA shop DELETE t FROM t JOIN u ON 1", MYSQL),
        ("EXPLAIN ANALYZE FORMAT=JSON INTO @v UPDATE t, u SET t.a = 1", MYSQL),
        ("DELETE FROM t WHERE UTC_DATE", None),
        ("DELETE FROM t WHERE id = 1 OR UTC_TIMESTAMP", None),
        ("DELETE FROM t WHERE CURRENT_ROLE IS NULL", MARIADB),
        ("DELETE FROM t WHERE id = (id)", None),
        ("DELETE FROM t WHERE id + 0 = id + 0", MARIADB),
        ("SET STATEMENT max_statement_time = NEXT VALUE FOR help.s FOR DELETE FROM t", MARIADB),
    ],
)
def test_review_findings_are_denied(sql: str, server: ServerVersion | None) -> None:
    assert verdict(sql, server) == "deny", sql


def test_set_statement_reports_the_variables_it_sets() -> None:
    v = DEFAULT.judge(analyse(b"SET STATEMENT sql_log_bin = 0 FOR UPDATE t SET a = 1 WHERE id = 1"), "db")
    assert v.rule == "default/safety-settings"


@pytest.mark.parametrize(
    "sql",
    [
        "WITH customers AS (SELECT * FROM customers) SELECT * FROM customers",
        "SELECT * FROM customers, (WITH customers AS (SELECT 1 a) SELECT a FROM customers) x",
    ],
)
def test_cte_names_do_not_hide_the_real_table(sql: str) -> None:
    assert TABLE_RULE.judge(analyse(sql.encode()), "shop").action is Action.DENY


def test_literals_never_decide_triviality_so_the_cache_cannot_be_poisoned() -> None:
    analyser = Analyser(MARIADB)
    for first, then in [
        (b"DELETE FROM t WHERE id + 0 = id + 1", b"DELETE FROM t WHERE id + 0 = id + 0"),
        (b"DELETE FROM t WHERE (id, 2) = (id, 1)", b"DELETE FROM t WHERE (id, 1) = (id, 1)"),
    ]:
        analyser(first)
        assert DEFAULT.judge(analyser(then), "db").action is Action.DENY, then
        assert DEFAULT.judge(analyse(then, MARIADB), "db").action is Action.DENY


def test_readings_that_disagree_on_a_use_leave_the_database_unknown() -> None:
    a = analyse(b"USE /*!99999 other */ shop", MARIADB)
    assert a.use_uncertain and a.use_database is None
    assert not analyse(b"USE shop").use_uncertain


def test_thousands_of_conditions_are_unread_not_a_crash() -> None:
    sql = b"DELETE FROM t WHERE id=1" + b" OR id=1" * 3000
    (facts,) = analyse(sql).statements
    assert verdict(sql.decode()) == "deny"
    assert facts.kind in ("delete", "unknown")


@pytest.mark.parametrize(
    "sql",
    [
        b"UPDATE t AS `x\x81` SET a = 1 WHERE id = ` SET a = 1 -- `",
        b"DELETE FROM t AS `a\x81` WHERE id = ` -- `",
        b"SET @a\x81`=1, GLOBAL general_log=1 -- `",
        b"SELECT 1 AS `a\x81` FROM t WHERE id = `, SLEEP(9) -- `",
    ],
)
def test_a_multibyte_client_charset_is_read_as_the_server_reads_it(sql: bytes) -> None:
    # In gbk, big5, sjis, cp932 and gb18030 a character's second byte may be a backquote.
    assert DEFAULT.judge(analyse(sql, MARIADB, multibyte=True), "db").action is Action.DENY
    analyser = Analyser(MARIADB, multibyte=True)
    assert DEFAULT.judge(analyser(sql), "db").action is Action.DENY
    assert DEFAULT.judge(analyser(sql), "db").action is Action.DENY  # cached: the same


def test_utf8_text_is_not_read_as_a_multibyte_charset_unless_the_session_says_so() -> None:
    sql = "SELECT `café` FROM t WHERE id = 1".encode()
    assert DEFAULT.judge(analyse(sql), "db").action is Action.ALLOW
    assert analyse(b"SET NAMES gbk").charsets == {"gbk"}
    assert analyse(b"SET character_set_client = @c").charsets == {"?"}


@pytest.mark.parametrize("server", [MYSQL, MARIADB, None])
def test_a_six_digit_version_is_split_both_ways_whatever_the_greeting_says(
    server: ServerVersion | None,
) -> None:
    # MariaDB reads /*!100000 as version 100000 and runs SLEEP(5); MySQL 8.0 reads 10000.
    assert verdict("SELECT /*!100000SLEEP(5)+*/ 1", server) == "deny"

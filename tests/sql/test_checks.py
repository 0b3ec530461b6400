"""LOAD DATA|XML ... LOCAL INFILE seen under every reading, executable comments included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hoopy.sql.checks import loads_local_file
from hoopy.sql.lexer import ServerVersion

MARIADB = ServerVersion(mariadb=True, version=101106)
MYSQL = ServerVersion(mariadb=False, version=80400)


@pytest.mark.parametrize(
    "sql",
    [
        "LOAD DATA LOCAL INFILE 'f' INTO TABLE t",
        "load xml concurrent local infile 'f' into table t",
        "LOAD DATA LOW_PRIORITY LOCAL INFILE 'f' INTO TABLE t",
        "/*!LOAD DATA LOCAL INFILE 'f' INTO TABLE t*/",
        "/*M!100000 LOAD DATA LOCAL INFILE 'f' INTO TABLE t */",
        "LOAD DATA /*!LOCAL*/ INFILE 'f' INTO TABLE t",
        "LOAD /**/ DATA -- c\n LOCAL # c\n INFILE 'f' INTO TABLE t",
        "SELECT 1; LOAD DATA LOCAL INFILE 'f' INTO TABLE t",
        # A ';' hidden in a string under one quoting but not under the other.
        "SELECT '\\'; LOAD DATA LOCAL INFILE 'f' INTO TABLE t -- '",
        # A version comment the server skips, in front of the statement.
        "/*!99999 SELECT 1 */ LOAD DATA LOCAL INFILE 'f' INTO TABLE t",
    ],
)
def test_refused_forms(sql: str) -> None:
    assert loads_local_file(sql.encode(), MARIADB)
    assert loads_local_file(sql.encode(), None)


@pytest.mark.parametrize(
    "sql",
    [
        "LOAD DATA INFILE 'local' INTO TABLE local",
        "SELECT 'LOAD DATA LOCAL INFILE'",
        "SELECT 1 /* ; LOAD DATA LOCAL INFILE */",
        "SELECT local FROM t",
        "SELECT `;LOAD DATA LOCAL INFILE`",
    ],
)
def test_other_statements_pass(sql: str) -> None:
    assert not loads_local_file(sql.encode(), MARIADB)


def test_fails_closed_on_comments_the_server_skips() -> None:
    # MySQL skips /*M! comments, but a check refuses what any reading shows: hiding a LOAD
    # DATA LOCAL in a comment is no legitimate client's business.
    assert loads_local_file(b"/*M!100000 LOAD DATA LOCAL INFILE 'f' INTO TABLE t */", MYSQL)
    assert loads_local_file(b"/*!99999 LOAD DATA LOCAL INFILE 'f' INTO TABLE t */", MARIADB)


SEPARATORS = st.sampled_from([" ", "\n", "/**/", "/* x */", "-- c\n", "#c\n", "/*!*/"])


@st.composite
def load_local(draw: st.DrawFn) -> str:
    words = ["LOAD", draw(st.sampled_from(["DATA", "XML"]))]
    words += draw(st.lists(st.sampled_from(["LOW_PRIORITY", "CONCURRENT"]), max_size=1))
    words += ["LOCAL", "INFILE", "'/etc/passwd'", "INTO", "TABLE", "t"]
    out = []
    for word in words:
        word = "".join(c.lower() if draw(st.booleans()) else c for c in word)
        wrap = draw(st.sampled_from(["", "", "/*!{}*/", "/*!50000 {} */", "/*M!100000 {} */"]))
        out.append(wrap.format(word) if wrap else word)
    sql = out[0]
    for word in out[1:]:
        sql += draw(SEPARATORS) + word
    whole = draw(st.sampled_from(["{}", "/*!{}*/", "/*M!100100 {}*/", "SELECT 1;{}"]))
    return whole.format(sql)


@given(load_local())
def test_generated_variants_are_refused_on_mariadb(sql: str) -> None:
    assert loads_local_file(sql.encode(), MARIADB), sql

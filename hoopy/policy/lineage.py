"""Which source columns feed each output column of a statement: for masking.

Pure. A result's column definitions name the physical column behind a plain column reference,
alias or not; they name nothing for an expression (``CONCAT(email, '')``), and a derived
table, a CTE or a view reports itself as the origin (measured: tests/policy/test_masking.py).
Lineage fills those gaps from the statement's text: for each output column of the top-level
query, the set of base-table columns that can flow into it, through expressions, functions,
aggregates, scalar subqueries, derived tables, CTEs and UNION branches. It also says which
columns a statement reads outside its output (WHERE, JOIN ... ON, GROUP BY, HAVING, ORDER
BY: probing), which flow into a write (INSERT ... SELECT, CREATE TABLE ... AS SELECT, UPDATE
... SET, user variables, INTO OUTFILE), and whether anything could not be traced.

The text is read as the server reads it, with the guardrails' lexer (hoopy/sql/lexer.py):
executable comments are code, under every reading that can differ, and the sources of each
reading are joined. Over-approximation is the rule: an unqualified column in a scope with
several tables may come from any of them, and is counted from each.

Views are base tables here; ``resolve_views`` (with the target's view definitions, read by
the gateway) replaces them by what they select.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hoopy.policy.analysis import _COMMENTS, _code_text, _readings
from hoopy.sql.lexer import ServerVersion, masked, statements, tokenize

logging.getLogger("sqlglot").setLevel(logging.CRITICAL + 1)


@dataclass(frozen=True, slots=True, order=True)
class Source:
    """A base-table column; ``schema`` None: the session's current database."""

    schema: str | None
    table: str
    column: str


@dataclass(frozen=True, slots=True)
class Output:
    """One output column: its name and sources; ``star`` for ``*``/``t.*`` (it expands to
    columns whose definitions carry their origin), with ``sources`` then the union of what
    it could expand to."""

    name: str
    sources: frozenset[Source]
    star: bool = False


@dataclass(frozen=True, slots=True)
class StatementLineage:
    outputs: tuple[Output, ...] = ()
    # Derived tables and CTEs by name (lower case): their output columns by name, for result
    # columns whose definition reports the derived table as the origin.
    derived: tuple[tuple[str, tuple[Output, ...]], ...] = ()
    filters: frozenset[Source] = frozenset()  # read outside the output (probing)
    writes: frozenset[Source] = frozenset()  # flowing into a table, a variable or a file
    unknown: str | None = None  # why something could not be traced (then nothing is trusted)
    # CALL: the procedure sends results of its own, so results and statements no longer
    # line up after it (the masking relay then goes by column definitions alone).
    calls: bool = False
    # Statements masking cannot follow at all, and why: compound statements (IF ... END IF,
    # run whole by the server, with results of their own), definitions of functions,
    # triggers, events and views (their bodies run later, untraced).
    opaque: str | None = None
    # SQL-level PREPARE / EXECUTE / EXECUTE IMMEDIATE: the text that runs is not this one.
    dynamic: bool = False
    # SHOW WARNINGS / SHOW ERRORS (``diagnostics``) and GET DIAGNOSTICS (``get_diagnostics``):
    # they read the messages of the statement before, which can quote its values.
    diagnostics: bool = False
    get_diagnostics: bool = False
    # The base tables (or views) it reads: views among them are followed (``Views``).
    tables: frozenset[tuple[str | None, str]] = frozenset()

    def derived_output(self, table: str, column: str) -> Output | None:
        table, column = table.lower(), column.lower()
        for name, outputs in self.derived:
            if name == table:
                for o in outputs:
                    if o.name == column:
                        return o
                # A star inside the derived table: the column of that name in what it
                # expands to (a base table's column, or any source of a derived one).
                stars = [o for o in outputs if o.star]
                if not stars:
                    return None
                return Output(column, frozenset(named(s, column) for o in stars for s in o.sources))
        return None

    @property
    def every_source(self) -> frozenset[Source]:
        found = {s for o in self.outputs for s in o.sources}
        for _, outputs in self.derived:
            found.update(s for o in outputs for s in o.sources)
        return frozenset(found | self.filters | self.writes)


UNKNOWN_PARSE = "hoopy cannot parse this statement"
# The column of a ``Source`` that stands for every column of its table (a ``*`` over it).
ANY_COLUMN = "*"


def named(source: Source, column: str) -> Source:
    """``source``, with a ``*`` over its table resolved to the column named ``column``."""
    return Source(source.schema, source.table, column) if source.column == ANY_COLUMN else source


class _Unknown(Exception):
    pass


@dataclass
class _Scope:
    sources: dict[str, tuple[str, Any]]  # alias -> ("base", (schema, table)) | ("derived", outputs)
    parent: _Scope | None = None
    derived: dict[str, tuple[Output, ...]] = field(default_factory=dict)


def _arg(node: Any, name: str) -> Any:
    args = node.args
    value = args.get(name + "_")
    return value if value is not None else args.get(name)


class _Tracer:
    def __init__(self) -> None:
        self.filters: set[Source] = set()
        self.writes: set[Source] = set()
        self.derived: dict[str, tuple[Output, ...]] = {}
        self.tables: set[tuple[str | None, str]] = set()

    # --- queries ----------------------------------------------------------------------------

    def query(
        self, node: Any, env: dict[str, tuple[Output, ...]], parent: _Scope | None
    ) -> tuple[Output, ...]:
        from sqlglot import exp

        if isinstance(node, exp.Subquery | exp.Paren):
            return self.query(node.this, env, parent)
        if isinstance(node, exp.Union | exp.Intersect | exp.Except):
            env = self._with(node, env, parent)
            left = self.query(node.this, env, parent)
            right = self.query(node.expression, env, parent)
            if any(o.star for o in left + right) and len(left) != len(right):
                raise _Unknown("a UNION branch selects * (its columns cannot be lined up)")
            if len(left) != len(right):
                raise _Unknown("UNION branches with different column counts")
            return tuple(
                Output(a.name, a.sources | b.sources, a.star or b.star)
                for a, b in zip(left, right, strict=True)
            )
        if isinstance(node, exp.Values):
            return tuple(
                Output(f"_{i}", frozenset()) for i in range(len(node.expressions[0].expressions))
            )
        if not isinstance(node, exp.Select):
            raise _Unknown(f"a {type(node).__name__} where a query was expected")
        env = self._with(node, env, parent)
        scope = _Scope({}, parent)
        from_ = _arg(node, "from")
        if from_ is not None:
            self._source(from_.this, scope, env)
        for join in node.args.get("joins") or ():
            self._source(join.this, scope, env)
        outputs: list[Output] = []
        for e in node.expressions:
            outputs.extend(self._projection(e, scope, env))
        for join in node.args.get("joins") or ():
            if join.args.get("on") is not None:
                self.filters |= self._sources(join.args["on"], scope, env)
            if join.args.get("using") or "NATURAL" in str(join.args.get("method") or "").upper():
                # The join compares columns it does not name: count every column of every
                # table of the query as compared.
                self.filters |= {s for o in [self._star(scope, None)] for s in o.sources}
        for key in ("where", "group", "having", "order", "qualify"):
            part = node.args.get(key)
            if part is not None:
                self.filters |= self._sources(part, scope, env, outputs)
                if key in ("group", "order"):
                    self.filters |= _ordinals(part, outputs)
        into = node.args.get("into")
        if into is not None:
            self.writes |= {s for o in outputs for s in o.sources}
        return tuple(outputs)

    def _with(
        self, node: Any, env: dict[str, tuple[Output, ...]], parent: _Scope | None
    ) -> dict[str, tuple[Output, ...]]:
        with_ = _arg(node, "with")
        if with_ is None:
            return env
        env = dict(env)
        for cte in with_.expressions:
            name = cte.alias_or_name.lower()
            if with_.args.get("recursive"):
                # Its own name inside it is itself: trace it with itself empty, then again
                # with what that found (the anchor's sources reach the recursive branch).
                env[name] = ()
                env[name] = self.query(cte.this, env, parent)
            env[name] = self.query(cte.this, env, parent)
            columns = cte.args.get("alias")
            names = (
                [c.name.lower() for c in columns.columns]
                if columns is not None and columns.columns
                else []
            )
            if names:
                outs = env[name]
                if len(names) != len(outs):
                    raise _Unknown(f"CTE {name} names {len(names)} columns for {len(outs)}")
                env[name] = tuple(
                    Output(n, o.sources, o.star) for n, o in zip(names, outs, strict=True)
                )
            self.derived[name] = env[name]
        return env

    def _source(self, node: Any, scope: _Scope, env: dict[str, tuple[Output, ...]]) -> None:
        from sqlglot import exp

        if isinstance(node, exp.Table):
            if isinstance(node.this, exp.Identifier | exp.Var) or node.name:
                name = node.name.lower()
                alias = node.alias_or_name.lower()
                schema = node.db.lower() or None
                if schema is None and name in env:
                    scope.sources[alias] = ("derived", env[name])
                    self.derived.setdefault(alias, env[name])
                else:
                    scope.sources[alias] = ("base", (schema, name))
                    self.tables.add((schema, name))
                return
            raise _Unknown("a table function in FROM")
        if isinstance(node, exp.Subquery):
            outputs = self.query(node.this, env, scope.parent)
            alias = node.alias_or_name.lower()
            columns = node.args.get("alias")
            names = (
                [c.name.lower() for c in columns.columns]
                if columns is not None and columns.columns
                else []
            )
            if names:
                if len(names) != len(outputs):
                    raise _Unknown(
                        f"derived table {alias} names {len(names)} columns for {len(outputs)}"
                    )
                outputs = tuple(
                    Output(n, o.sources, o.star) for n, o in zip(names, outputs, strict=True)
                )
            scope.sources[alias] = ("derived", outputs)
            self.derived[alias] = outputs
            return
        if isinstance(node, exp.Lateral | exp.Unnest):
            raise _Unknown("LATERAL in FROM")
        raise _Unknown(f"{type(node).__name__} in FROM")

    def _projection(
        self, e: Any, scope: _Scope, env: dict[str, tuple[Output, ...]]
    ) -> list[Output]:
        from sqlglot import exp

        if isinstance(e, exp.Star):
            return [self._star(scope, None)]
        if isinstance(e, exp.Column) and isinstance(e.this, exp.Star):
            return [self._star(scope, e.table.lower())]
        name = (
            e.alias_or_name.lower()
            if isinstance(e, exp.Alias | exp.Column)
            else e.sql("mysql").lower()
        )
        # SELECT @v := expr: the expression flows into a user variable.
        for assignment in e.find_all(exp.PropertyEQ):
            self.writes |= self._sources(assignment.expression, scope, env)
        return [Output(name, frozenset(self._sources(e, scope, env)))]

    def _star(self, scope: _Scope, table: str | None) -> Output:
        found: set[Source] = set()
        named = [table] if table else list(scope.sources)
        for alias in named:
            source = self._lookup(scope, alias)
            if source is None:
                raise _Unknown(f"{alias}.* names no table of the query")
            kind, value = source
            if kind == "derived":
                found.update(s for o in value for s in o.sources)
            else:
                schema, name = value
                found.add(Source(schema, name, ANY_COLUMN))
        return Output("*", frozenset(found), star=True)

    def _lookup(self, scope: _Scope | None, alias: str) -> tuple[str, Any] | None:
        while scope is not None:
            if alias in scope.sources:
                return scope.sources[alias]
            scope = scope.parent
        return None

    def _sources(
        self,
        node: Any,
        scope: _Scope,
        env: dict[str, tuple[Output, ...]],
        outputs: Sequence[Output] = (),
    ) -> set[Source]:
        """Every source a (sub)expression reads: its columns, and its subqueries' outputs."""
        from sqlglot import exp

        found: set[Source] = set()
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, exp.Subquery | exp.Select | exp.Union) and n is not node:
                inner = n.this if isinstance(n, exp.Subquery) else n
                found.update(s for o in self.query(inner, env, scope) for s in o.sources)
                continue
            if isinstance(n, exp.Column):
                found.update(self._column(n, scope, outputs))
                continue
            stack.extend(n.iter_expressions())
        return found

    def _column(self, c: Any, scope: _Scope, outputs: Sequence[Output]) -> set[Source]:
        name = c.name.lower()
        table = c.table.lower()
        if c.args.get("db") is not None and c.db:
            return {Source(c.db.lower(), table, name)}
        if table:
            source = self._lookup(scope, table)
            if source is None:
                raise _Unknown(f"column {table}.{name} names no table of the query")
            return self._from(source, name)
        s: _Scope | None = scope
        while s is not None:
            if s.sources:
                found: set[Source] = set()
                for source in s.sources.values():
                    found |= self._from(source, name)
                if found or s.parent is None:
                    # An alias of the select list (ORDER BY total): its sources.
                    for o in outputs:
                        if o.name == name:
                            found |= o.sources
                    return found
            s = s.parent
        for o in outputs:
            if o.name == name:
                return set(o.sources)
        return set()  # a word sqlglot read as a column with no table to come from

    def _inner_queries(self, tree: Any, skip: Any) -> set[Source]:
        """The sources of every query inside ``tree`` but ``skip`` (traced already)."""
        from sqlglot import exp

        found: set[Source] = set()
        for select in tree.find_all(exp.Select):
            if select is skip or (skip is not None and _inside(select, skip)):
                continue
            # Each branch of a UNION on its own: the union of their sources is the same.
            found.update(s for o in self.query(select, {}, None) for s in o.sources)
        return found

    @staticmethod
    def _from(source: tuple[str, Any], name: str) -> set[Source]:
        kind, value = source
        if kind == "base":
            schema, table = value
            return {Source(schema, table, name)}
        found: set[Source] = set()
        for o in value:
            if o.name == name:
                found |= o.sources
            elif o.star:
                found.update(named(s, name) for s in o.sources)
        return found

    # --- statements ---------------------------------------------------------------------------

    def statement(self, tree: Any) -> StatementLineage:
        from sqlglot import exp

        outputs: tuple[Output, ...] = ()
        if isinstance(tree, exp.Select | exp.Union | exp.Intersect | exp.Except | exp.Subquery):
            outputs = self.query(tree, {}, None)
        elif isinstance(tree, exp.Insert | exp.Create):
            inner = tree.expression
            if isinstance(inner, exp.Select | exp.Union | exp.Subquery):
                sources = self.query(inner, {}, None)
                self.writes |= {s for o in sources for s in o.sources}
            else:
                inner = None  # VALUES or none: its queries are found below
            # VALUES (...), SET, ON DUPLICATE KEY UPDATE, RETURNING: whatever any query
            # inside reads is written (or, with RETURNING, handed back).
            self.writes |= self._inner_queries(tree, inner)
            if isinstance(tree, exp.Insert):
                scope = _Scope({})
                if isinstance(tree.this, exp.Table):
                    self._source(tree.this, scope, {})
                elif isinstance(tree.this, exp.Schema) and isinstance(tree.this.this, exp.Table):
                    self._source(tree.this.this, scope, {})
                for key in ("returning",):
                    if tree.args.get(key) is not None:
                        self.writes |= self._sources(tree.args[key], scope, {})
        elif isinstance(tree, exp.Update):
            scope = _Scope({})
            self._source(tree.this, scope, {})
            for join in tree.args.get("joins") or ():
                self._source(join.this, scope, {})
            from_ = _arg(tree, "from")
            if from_ is not None:
                self._source(from_.this, scope, {})
            for assignment in tree.expressions:
                self.writes |= self._sources(assignment.expression, scope, {})
            if tree.args.get("where") is not None:
                self.filters |= self._sources(tree.args["where"], scope, {})
        elif isinstance(tree, exp.Delete):
            scope = _Scope({})
            self._source(tree.this, scope, {})
            if tree.args.get("where") is not None:
                self.filters |= self._sources(tree.args["where"], scope, {})
            if tree.args.get("returning") is not None:
                self.writes |= self._sources(tree.args["returning"], scope, {})
        elif isinstance(tree, exp.Set):
            scope = _Scope({})
            for item in tree.expressions:
                self.writes |= self._sources(item, scope, {})
        elif not isinstance(tree, _QUIET_TREES) and any(True for _ in tree.find_all(exp.Select)):
            # A statement of a kind the tracer does not follow that runs a query (EXPLAIN
            # SELECT, a compound statement...): unknown, never "reads nothing".
            raise _Unknown(f"a {type(tree).__name__} statement that runs a query")
        return StatementLineage(
            outputs=outputs,
            derived=tuple(sorted(self.derived.items())),
            filters=frozenset(self.filters),
            writes=frozenset(self.writes),
            tables=frozenset(self.tables),
        )


def _inside(node: Any, ancestor: Any) -> bool:
    while node is not None:
        if node is ancestor:
            return True
        node = node.parent
    return False


def _ordinals(part: Any, outputs: Sequence[Output]) -> set[Source]:
    """``ORDER BY 2`` / ``GROUP BY 2``: the sources of the output at that position."""
    from sqlglot import exp

    found: set[Source] = set()
    for literal in part.find_all(exp.Literal):
        if not literal.is_string and literal.this.isdigit():
            n = int(literal.this)
            if 1 <= n <= len(outputs):
                found |= outputs[n - 1].sources
    return found


def _quiet_trees() -> tuple[type, ...]:
    from sqlglot import exp

    return (exp.Command, exp.Show, exp.Use, exp.Transaction, exp.Commit, exp.Rollback)


_QUIET_TREES: tuple[type, ...] = ()


# The first words of compound statements (run whole by the server, sending results of
# their own) and of definitions whose bodies run later (functions, triggers, events, views
# defined again): masking cannot follow either.
_COMPOUND = frozenset(("IF", "WHILE", "LOOP", "REPEAT", "FOR", "CASE"))
_ROUTINE_OBJECTS = frozenset(("FUNCTION", "PROCEDURE", "TRIGGER", "EVENT", "VIEW", "PACKAGE"))


def _trace(code: str) -> StatementLineage:
    import sqlglot
    from sqlglot.errors import SqlglotError

    words = code.upper().replace("(", " ").split()
    first = words[0] if words else ""
    if first == "SHOW" and len(words) > 1 and words[1] in ("WARNINGS", "ERRORS", "COUNT"):
        return StatementLineage(diagnostics=True)
    if first == "GET" and "DIAGNOSTICS" in words[1:3]:
        return StatementLineage(get_diagnostics=True)
    if first == "CALL":
        return StatementLineage(calls=True)
    if (
        first in _COMPOUND
        or (first == "BEGIN" and words[1:3] == ["NOT", "ATOMIC"])
        or (len(words) > 1 and words[0].endswith(":"))
    ):
        return StatementLineage(opaque="a compound statement (IF, WHILE, BEGIN NOT ATOMIC...)")
    if first in ("CREATE", "ALTER") and _ROUTINE_OBJECTS & set(words[1:8]):
        return StatementLineage(
            opaque="a definition of a function, procedure, trigger, event or view, whose body "
            "would run later where masking cannot follow it"
        )
    if first in ("EXPLAIN", "DESCRIBE", "DESC", "ANALYZE") and len(words) > 1:
        inner = code.split(None, 1)[1]
        traced = _trace(inner)
        # EXPLAIN's notes can quote values (Note 1003 shows the query with constants in):
        # what the statement reads counts as read, nothing as output.
        return StatementLineage(
            unknown=traced.unknown,
            filters=traced.every_source,
            tables=traced.tables,
            calls=traced.calls,
            dynamic=traced.dynamic,
            opaque=traced.opaque,
        )
    if first in ("PREPARE", "EXECUTE"):
        return StatementLineage(dynamic=True)

    try:
        trees = sqlglot.parse(code, read="mysql")
    except (SqlglotError, RecursionError):
        return StatementLineage(unknown=UNKNOWN_PARSE)
    except Exception:  # sqlglot fails on odd input in other ways too
        return StatementLineage(unknown=UNKNOWN_PARSE)
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        return StatementLineage(unknown=UNKNOWN_PARSE)
    global _QUIET_TREES
    if not _QUIET_TREES:
        _QUIET_TREES = _quiet_trees()
    try:
        return _Tracer().statement(trees[0])
    except _Unknown as exc:
        return StatementLineage(unknown=f"hoopy cannot trace this statement's columns ({exc})")
    except RecursionError:
        return StatementLineage(unknown="hoopy cannot trace this statement's columns (too deep)")
    except Exception as exc:  # a tree shape the tracer does not know: a fact, not a crash
        return StatementLineage(
            unknown=f"hoopy cannot trace this statement's columns ({type(exc).__name__})"
        )


def _join(a: StatementLineage, b: StatementLineage) -> StatementLineage:
    if a.unknown or b.unknown:
        return StatementLineage(unknown=a.unknown or b.unknown, calls=a.calls or b.calls)
    if a.calls or b.calls or a.dynamic or b.dynamic or a.opaque or b.opaque:
        return StatementLineage(
            calls=a.calls or b.calls,
            dynamic=a.dynamic or b.dynamic,
            opaque=a.opaque or b.opaque,
        )
    if len(a.outputs) != len(b.outputs):
        return StatementLineage(unknown="the readings of this statement select different columns")
    derived = dict(a.derived)
    for name, outputs in b.derived:
        if name in derived and len(derived[name]) == len(outputs):
            derived[name] = tuple(
                Output(x.name, x.sources | y.sources, x.star or y.star)
                for x, y in zip(derived[name], outputs, strict=True)
            )
        else:
            derived.setdefault(name, outputs)
    return StatementLineage(
        outputs=tuple(
            Output(x.name, x.sources | y.sources, x.star or y.star)
            for x, y in zip(a.outputs, b.outputs, strict=True)
        ),
        derived=tuple(sorted(derived.items())),
        filters=a.filters | b.filters,
        writes=a.writes | b.writes,
        tables=a.tables | b.tables,
    )


def lineage(
    text: bytes, server: ServerVersion | None = None, *, multibyte: bool = False
) -> tuple[StatementLineage, ...]:
    """One lineage per statement of ``text``, joined over every reading of it."""
    per_reading: list[list[StatementLineage]] = []
    for reading in _readings(text, server, multibyte):
        data = text if reading.multibyte is None else masked(text, reading.multibyte)
        code = (t for t in tokenize(text, reading) if t.kind not in _COMMENTS)
        traced = []
        for tokens in statements(data, code):
            traced.append(_trace(_code_text(data, tokens, frozenset(), {})))
        per_reading.append(traced)
    if not per_reading:
        return ()
    first = per_reading[0]
    for other in per_reading[1:]:
        if len(other) != len(first):
            unknown = StatementLineage(unknown="the readings of this text split it differently")
            return tuple(unknown for _ in first) or (unknown,)
        first = [_join(a, b) for a, b in zip(first, other, strict=True)]
    return tuple(first)


def all_sources(lineages: Iterable[StatementLineage]) -> frozenset[Source]:
    return frozenset(s for lin in lineages for s in lin.every_source)


# Views defined on views on views...: followed this deep, then refused.
MAX_VIEW_DEPTH = 16


@dataclass(frozen=True)
class Views:
    """A target's views, by (schema, name) in lower case: each view's output columns with
    their sources, or None for a view hoopy cannot trace (its statements are refused)."""

    views: dict[tuple[str, str], tuple[Output, ...] | None]
    _resolved: dict[Any, tuple[StatementLineage, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __hash__(self) -> int:
        return id(self)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for _, name in self.views)

    def resolve(
        self, lineages: tuple[StatementLineage, ...], database: str | None
    ) -> tuple[StatementLineage, ...]:
        """``lineages`` with every source that is a view's column replaced by what feeds it,
        and each view read added as a derived table (result columns name the view as their
        origin). A view that cannot be traced makes its statement's lineage unknown."""
        key = (lineages, database)
        found = self._resolved.get(key)
        if found is not None:
            return found
        names = self.names
        out = []
        for lin in lineages:
            if (
                lin.unknown
                or lin.calls
                or (
                    not any(t in names for _, t in lin.tables)
                    and not any(s.table in names for s in lin.every_source)
                )
            ):
                out.append(lin)
                continue
            try:
                out.append(self._resolve(lin, database))
            except _Unknown as exc:
                out.append(StatementLineage(unknown=f"hoopy cannot trace this statement ({exc})"))
        result = tuple(out)
        if len(self._resolved) >= 4096:
            self._resolved.clear()
        self._resolved[key] = result
        return result

    def _view(self, schema: str | None, table: str, database: str | None) -> Any:
        """The view's outputs, None when not a view; raises _Unknown for one not traced."""
        candidates = (
            [(schema, table)]
            if schema is not None or database is not None
            else [k for k in self.views if k[1] == table]
        )
        if schema is None and database is not None:
            candidates = [(database.lower(), table)]
        for k in candidates:
            if k in self.views:
                outputs = self.views[k]
                if outputs is None:
                    raise _Unknown(f"view {k[0]}.{k[1]} cannot be traced")
                return outputs
        return None

    def _expand(self, sources: frozenset[Source], database: str | None) -> frozenset[Source]:
        result: set[Source] = set()
        todo = list(sources)
        seen: set[Source] = set()
        steps = 0
        while todo:
            s = todo.pop()
            if s in seen:
                continue
            seen.add(s)
            steps += 1
            if steps > MAX_VIEW_DEPTH * 1024:
                raise _Unknown("views nest too deep")
            outputs = self._view(s.schema, s.table, database)
            if outputs is None:
                result.add(s)
                continue
            matched = [o for o in outputs if o.name == s.column]
            for o in matched or outputs:
                todo.extend(o.sources)
        return frozenset(result)

    def _resolve(self, lin: StatementLineage, database: str | None) -> StatementLineage:
        derived = dict(lin.derived)
        for schema, table in lin.tables:
            outputs = self._view(schema, table, database)
            if outputs is not None and table not in derived:
                derived[table] = tuple(
                    Output(o.name, self._expand(o.sources, database)) for o in outputs
                )
        return StatementLineage(
            outputs=tuple(
                Output(o.name, self._expand(o.sources, database), o.star) for o in lin.outputs
            ),
            derived=tuple(
                sorted(
                    (
                        name,
                        tuple(
                            Output(o.name, self._expand(o.sources, database), o.star) for o in outs
                        ),
                    )
                    for name, outs in derived.items()
                )
            ),
            filters=self._expand(lin.filters, database),
            writes=self._expand(lin.writes, database),
            tables=lin.tables,
        )

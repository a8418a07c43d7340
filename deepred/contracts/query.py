"""Test-set queries as data: column names, literals, comparisons, arithmetic and boolean operators, nothing else.

A query string comes from a config file, and pandas' `DataFrame.query` evaluates it with Python's grammar plus
`@name` references to the caller's variables, which reach a module's globals (`@Path('x').touch()` runs). So a
query is parsed with `ast` and checked against a whitelist before anything evaluates it, and evaluated with empty
variable scopes, so that no name but a column resolves.
"""

from __future__ import annotations

import ast
import io
import tokenize

import pandas as pd

ALLOWED = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Invert, ast.USub, ast.UAdd,
    ast.BinOp, ast.BitAnd, ast.BitOr, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Mod, ast.Pow, ast.FloorDiv,
    ast.Compare, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
    ast.Name, ast.Load, ast.Constant, ast.List, ast.Tuple,
)
WHAT = "only column names, literals, comparisons, arithmetic and and/or/not (&, |, ~) are allowed"


def _outside_strings(query: str) -> str:
    """The query's text with string literals blanked (a '@' or '`' inside quotes is data)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(query).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return query
    return " ".join(t.string for t in tokens if t.type != tokenize.STRING)


def query_structure_problem(query: str) -> str | None:
    """Why `query` is not a plain data expression (None if it is); nothing is evaluated."""
    if not isinstance(query, str) or not query.strip():
        return "a query must be a non-empty string"
    bare = _outside_strings(query)
    if "@" in bare:
        return f"'@' (a reference to program variables) is not allowed; {WHAT}"
    if "`" in bare:
        return f"backquoted names are not allowed; {WHAT}"
    try:
        tree = ast.parse(query.strip(), mode="eval")
    except SyntaxError as exc:
        return f"not a valid expression ({exc.msg})"
    for node in ast.walk(tree):
        if not isinstance(node, ALLOWED):
            return f"{type(node).__name__.lower()} ({ast.unparse(node)!r}) is not allowed; {WHAT}"
        if isinstance(node, ast.Constant) and not isinstance(node.value, (str, int, float, bool, type(None))):
            return f"literal {node.value!r} is not allowed; {WHAT}"
    return None


def run_query(frame: pd.DataFrame, query: str) -> pd.DataFrame:
    """The rows of `frame` that `query` selects, after the structure check; no variable but a column resolves."""
    problem = query_structure_problem(query)
    if problem:
        raise ValueError(problem)
    return frame.query(query, local_dict={}, global_dict={})

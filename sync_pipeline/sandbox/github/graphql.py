"""A small GraphQL engine: parse, validate and execute queries against a typed schema.

It covers what GitHub clients send for reads: operations with variables, aliases, arguments
(variables and literals), nested selections and ``__typename``. Fragments, directives,
subscriptions and mutations are refused with a GraphQL error. Error messages follow the
wording of graphql-ruby, which serves GitHub's API.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

# ------------------------------------------------------------------------------ errors


class GraphQLError(Exception):
    """A GraphQL error; ``as_dict`` gives its entry in the response's ``errors`` list."""

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: int | None = None,
        path: list[str | int] | None = None,
        type_: str | None = None,
        code: str | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column
        self.path = path
        self.type = type_
        self.code = code
        self.extensions = extensions

    def as_dict(self) -> dict[str, Any]:
        """JSON form, keys in GitHub's order."""
        out: dict[str, Any] = {}
        if self.type is not None:
            out["type"] = self.type
        if self.code is not None:
            out["code"] = self.code
        if self.path is not None:
            out["path"] = self.path
        if self.extensions is not None:
            out["extensions"] = self.extensions
        if self.line is not None:
            out["locations"] = [{"line": self.line, "column": self.column}]
        out["message"] = self.message
        return out


# ------------------------------------------------------------------------------- AST


@dataclass(frozen=True)
class Var:
    """A ``$name`` reference in an argument."""

    name: str


@dataclass(frozen=True)
class EnumLiteral:
    """An unquoted enum value in an argument."""

    name: str


@dataclass
class Field:
    """A selected field."""

    name: str
    alias: str | None
    args: dict[str, Any]
    selections: list[Field] | None
    line: int
    column: int

    @property
    def key(self) -> str:
        """The response key (alias or name)."""
        return self.alias or self.name


@dataclass
class VarDef:
    """A variable definition ``$name: Type = default``."""

    name: str
    type: str
    default: Any
    has_default: bool
    line: int
    column: int


@dataclass
class Operation:
    """One operation of a document."""

    kind: str
    name: str | None
    var_defs: list[VarDef]
    selections: list[Field]
    line: int
    column: int


# ---------------------------------------------------------------------------- lexing

_TOKEN_RE = re.compile(
    r"""
    (?P<ignored>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<ellipsis>\.\.\.)
  | (?P<punct>[!$&():=@\[\]{}|])
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<float>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+))
  | (?P<int>-?(?:0|[1-9][0-9]*))
  | (?P<block>\"\"\"(?:\\\"\"\"|[^"]|"(?!""))*\"\"\")
  | (?P<string>"(?:[^"\\\n\r]|\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4}))*")
    """,
    re.VERBOSE,
)
_PUNCT_NAMES = {
    "!": "BANG",
    "$": "VAR_SIGN",
    "&": "AMP",
    "(": "LPAREN",
    ")": "RPAREN",
    ":": "COLON",
    "=": "EQUALS",
    "@": "DIR_SIGN",
    "[": "LBRACKET",
    "]": "RBRACKET",
    "{": "LCURLY",
    "}": "RCURLY",
    "|": "PIPE",
}
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


@dataclass(frozen=True)
class _Token:
    kind: str  # punctuation char, "...", NAME, INT, FLOAT, STRING, EOF
    value: str
    line: int
    column: int

    def describe(self) -> str:
        """The token as graphql-ruby names it in parse errors."""
        if self.kind == "EOF":
            return "end of document"
        kind = {
            "NAME": "IDENTIFIER",
            "INT": "INT",
            "FLOAT": "FLOAT",
            "STRING": "STRING",
            "...": "ELLIPSIS",
        }.get(self.kind, _PUNCT_NAMES.get(self.kind, self.kind))
        return f'"{self.value}" ({kind})'


def _unescape(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            nxt = raw[i + 1]
            if nxt == "u":
                out.append(chr(int(raw[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokenize(source: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    line, line_start = 1, 0
    while pos < len(source):
        match = _TOKEN_RE.match(source, pos)
        column = pos - line_start + 1
        if match is None:
            raise GraphQLError(
                f'Parse error on "{source[pos]}" (UNKNOWN_CHAR) at [{line}, {column}]',
                line=line,
                column=column,
            )
        kind = match.lastgroup or ""
        text = match.group()
        if kind == "ellipsis":
            tokens.append(_Token("...", text, line, column))
        elif kind == "punct":
            tokens.append(_Token(text, text, line, column))
        elif kind == "name":
            tokens.append(_Token("NAME", text, line, column))
        elif kind in ("int", "float"):
            tokens.append(_Token(kind.upper(), text, line, column))
        elif kind == "block":
            tokens.append(_Token("STRING", text[3:-3].replace('\\"""', '"""'), line, column))
        elif kind == "string":
            tokens.append(_Token("STRING", _unescape(text[1:-1]), line, column))
        newlines = text.count("\n")
        if newlines:
            line += newlines
            line_start = pos + text.rindex("\n") + 1
        pos = match.end()
    tokens.append(_Token("EOF", "", line, pos - line_start + 1))
    return tokens


# --------------------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokenize(source)
        self.i = 0

    def peek(self) -> _Token:
        """The next token, not consumed."""
        return self.tokens[self.i]

    def next(self) -> _Token:
        """Consume and return the next token."""
        token = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return token

    def error(self, token: _Token) -> GraphQLError:
        """A parse error at ``token``."""
        if token.kind == "EOF":
            return GraphQLError("Unexpected end of document", line=token.line, column=token.column)
        return GraphQLError(
            f"Parse error on {token.describe()} at [{token.line}, {token.column}]",
            line=token.line,
            column=token.column,
        )

    def expect(self, kind: str) -> _Token:
        """Consume a token of ``kind`` or fail."""
        token = self.next()
        if token.kind != kind:
            raise self.error(token)
        return token

    def unsupported(self, token: _Token, what: str) -> GraphQLError:
        """An error for syntax this engine does not implement."""
        return GraphQLError(
            f"{what} are not supported by this sandbox", line=token.line, column=token.column
        )

    def document(self) -> list[Operation]:
        """Document := Operation+."""
        operations: list[Operation] = []
        while self.peek().kind != "EOF":
            operations.append(self.operation())
        if not operations:
            raise GraphQLError("Unexpected end of document")
        return operations

    def operation(self) -> Operation:
        """Operation := SelectionSet | OperationType Name? VariableDefinitions? SelectionSet."""
        token = self.peek()
        if token.kind == "{":
            return Operation("query", None, [], self.selection_set(), token.line, token.column)
        if token.kind != "NAME":
            raise self.error(token)
        if token.value == "fragment":
            raise self.unsupported(token, "Fragments")
        if token.value not in ("query", "mutation", "subscription"):
            raise self.error(token)
        self.next()
        name = self.next().value if self.peek().kind == "NAME" else None
        var_defs = self.var_defs() if self.peek().kind == "(" else []
        if self.peek().kind == "@":
            raise self.unsupported(self.peek(), "Directives")
        selections = self.selection_set()
        return Operation(token.value, name, var_defs, selections, token.line, token.column)

    def var_defs(self) -> list[VarDef]:
        """VariableDefinitions := ( ($name: Type (= Value)?)* )."""
        self.expect("(")
        defs: list[VarDef] = []
        while self.peek().kind != ")":
            sign = self.expect("$")
            name = self.expect("NAME").value
            self.expect(":")
            type_ = self.type_ref()
            has_default = self.peek().kind == "="
            default = None
            if has_default:
                self.next()
                default = self.value(const=True)
            defs.append(VarDef(name, type_, default, has_default, sign.line, sign.column))
        self.expect(")")
        return defs

    def type_ref(self) -> str:
        """Type := Name | [Type] followed by an optional !."""
        if self.peek().kind == "[":
            self.next()
            inner = self.type_ref()
            self.expect("]")
            text = f"[{inner}]"
        else:
            text = self.expect("NAME").value
        if self.peek().kind == "!":
            self.next()
            text += "!"
        return text

    def selection_set(self) -> list[Field]:
        """SelectionSet := { Field+ }."""
        self.expect("{")
        fields: list[Field] = []
        while self.peek().kind != "}":
            token = self.peek()
            if token.kind == "...":
                raise self.unsupported(token, "Fragments")
            fields.append(self.field())
        self.expect("}")
        if not fields:
            raise self.error(self.tokens[self.i - 1])
        return fields

    def field(self) -> Field:
        """Field := (Alias:)? Name Arguments? SelectionSet?."""
        first = self.expect("NAME")
        alias, name = None, first.value
        if self.peek().kind == ":":
            self.next()
            alias, name = name, self.expect("NAME").value
        args: dict[str, Any] = {}
        if self.peek().kind == "(":
            self.next()
            while self.peek().kind != ")":
                arg = self.expect("NAME").value
                self.expect(":")
                args[arg] = self.value(const=False)
            self.expect(")")
        if self.peek().kind == "@":
            raise self.unsupported(self.peek(), "Directives")
        selections = self.selection_set() if self.peek().kind == "{" else None
        return Field(name, alias, args, selections, first.line, first.column)

    def value(self, const: bool) -> Any:
        """A literal or (unless ``const``) a variable."""
        token = self.next()
        if token.kind == "$" and not const:
            return Var(self.expect("NAME").value)
        if token.kind == "INT":
            return int(token.value)
        if token.kind == "FLOAT":
            return float(token.value)
        if token.kind == "STRING":
            return token.value
        if token.kind == "NAME":
            if token.value in ("true", "false"):
                return token.value == "true"
            if token.value == "null":
                return None
            return EnumLiteral(token.value)
        if token.kind == "[":
            items = []
            while self.peek().kind != "]":
                items.append(self.value(const))
            self.next()
            return items
        if token.kind == "{":
            obj: dict[str, Any] = {}
            while self.peek().kind != "}":
                key = self.expect("NAME").value
                self.expect(":")
                obj[key] = self.value(const)
            self.next()
            return obj
        raise self.error(token)


def parse(source: str) -> list[Operation]:
    """Parse a document into operations; GraphQLError on a syntax error."""
    return _Parser(source).document()


# ---------------------------------------------------------------------------- schema

Resolver = Callable[[Any, dict[str, Any], Any], Any]


@dataclass(frozen=True)
class FieldDef:
    """A field of an object type: its GraphQL type, arguments and resolver.

    ``resolve(parent, args, context)`` returns the value; for object types the value is
    passed as ``parent`` to the sub-selection's resolvers.
    """

    type: str
    resolve: Resolver
    args: dict[str, str] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)


Schema = dict[str, dict[str, FieldDef]]


def parse_datetime(value: Any) -> datetime | None:
    """An ISO-8601 DateTime as an aware UTC datetime (naive means UTC); None if invalid."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _coerce_scalar(base: str, value: Any) -> tuple[bool, Any]:
    """Input coercion of a scalar; (ok, coerced)."""
    if base in ("String", "ID", "URI"):
        if base == "ID" and isinstance(value, int) and not isinstance(value, bool):
            return True, str(value)
        return isinstance(value, str), value
    if base == "Int":
        ok = isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31
        return ok, value
    if base == "Float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if base == "Boolean":
        return isinstance(value, bool), value
    if base == "DateTime":
        parsed = parse_datetime(value)
        return parsed is not None, parsed
    if base == "Date":
        if not isinstance(value, str):
            return False, value
        try:
            return True, date.fromisoformat(value)
        except ValueError:
            return False, value
    return True, value


@dataclass(frozen=True)
class _Type:
    base: str
    non_null: bool
    of: _Type | None  # list element type

    @staticmethod
    def parse(text: str) -> _Type:
        """Parse ``[Int!]!``-style type text."""
        non_null = text.endswith("!")
        inner = text[:-1] if non_null else text
        if inner.startswith("["):
            return _Type("", non_null, _Type.parse(inner[1:-1]))
        return _Type(inner, non_null, None)

    @property
    def named(self) -> str:
        """The innermost named type."""
        return self.of.named if self.of is not None else self.base

    def __str__(self) -> str:
        inner = f"[{self.of}]" if self.of is not None else self.base
        return inner + ("!" if self.non_null else "")


def _literal_text(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, EnumLiteral):
        return value.name
    return str(value)


def _coerce(type_: _Type, value: Any) -> tuple[bool, Any]:
    if value is None:
        return not type_.non_null, None
    if type_.of is not None:
        items = value if isinstance(value, list) else [value]
        out = []
        for item in items:
            ok, coerced = _coerce(type_.of, item)
            if not ok:
                return False, value
            out.append(coerced)
        return True, out
    return _coerce_scalar(type_.base, value)


# -------------------------------------------------------------------------- execution


class _NullBubble(Exception):
    """A non-null field resolved to null: its parent becomes null."""


@dataclass
class ExecutionResult:
    """The response of one request: ``data`` (None when nothing ran) and ``errors``."""

    data: dict[str, Any] | None
    errors: list[GraphQLError]
    executed: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON body as GitHub sends it."""
        out: dict[str, Any] = {}
        if self.executed:
            out["data"] = self.data
        if self.errors:
            out["errors"] = [e.as_dict() for e in self.errors]
        return out


class Engine:
    """Validates and runs parsed queries against ``schema`` (root type ``Query``)."""

    def __init__(self, schema: Schema, scalars: frozenset[str]) -> None:
        self.schema = schema
        self.scalars = scalars

    # ---------------------------------------------------------------- validation
    def select_operation(self, ops: list[Operation], name: str | None) -> Operation:
        """The operation to run (by ``operationName`` when there are several)."""
        if name:
            for op in ops:
                if op.name == name:
                    return op
            raise GraphQLError(f'No operation named "{name}"')
        if len(ops) > 1:
            raise GraphQLError("An operation name is required")
        return ops[0]

    def validate(self, op: Operation) -> list[GraphQLError]:
        """Static errors of ``op`` (unknown fields, arguments, selections, variables)."""
        if op.kind != "query":
            return [
                GraphQLError(
                    f"Schema is not configured for {op.kind}s",
                    line=op.line,
                    column=op.column,
                )
            ]
        declared = {d.name: d for d in op.var_defs}
        errors: list[GraphQLError] = []
        used: set[str] = set()
        for d in op.var_defs:
            if _Type.parse(d.type).named not in self.scalars:
                errors.append(
                    GraphQLError(
                        f"{d.type} isn't a valid input type (on ${d.name})",
                        line=d.line,
                        column=d.column,
                        extensions={"code": "variableRequiresValidType", "typeName": d.type},
                    )
                )
        self._validate_selections(
            "Query", op.selections, [op.kind], declared, used, errors, op.name
        )
        for name in declared:
            if name not in used:
                d = declared[name]
                label = f"operation {op.name}" if op.name else f"anonymous {op.kind}"
                errors.append(
                    GraphQLError(
                        f"Variable ${name} is declared by {label} but not used",
                        line=d.line,
                        column=d.column,
                        path=[op.kind if not op.name else f"{op.kind} {op.name}"],
                        extensions={"code": "variableNotUsed", "variableName": name},
                    )
                )
        return errors

    def _validate_selections(
        self,
        type_name: str,
        selections: list[Field],
        path: list[str | int],
        declared: dict[str, VarDef],
        used: set[str],
        errors: list[GraphQLError],
        op_name: str | None,
    ) -> None:
        fields = self.schema[type_name]
        for f in selections:
            here = [*path, f.key]
            if f.name == "__typename":
                continue
            fdef = fields.get(f.name)
            if fdef is None:
                errors.append(
                    GraphQLError(
                        f"Field '{f.name}' doesn't exist on type '{type_name}'",
                        line=f.line,
                        column=f.column,
                        path=here,
                        extensions={
                            "code": "undefinedField",
                            "typeName": type_name,
                            "fieldName": f.name,
                        },
                    )
                )
                continue
            self._validate_args(f, fdef, here, declared, used, errors, op_name)
            ftype = _Type.parse(fdef.type)
            named = ftype.named
            if named in self.schema and not f.selections:
                errors.append(
                    GraphQLError(
                        f"Field must have selections (field '{f.name}' returns {named} but has"
                        f" no selections. Did you mean '{f.name} {{ ... }}'?)",
                        line=f.line,
                        column=f.column,
                        path=here,
                        extensions={"code": "selectionMismatch", "nodeName": f"field '{f.name}'"},
                    )
                )
            elif named not in self.schema and f.selections:
                errors.append(
                    GraphQLError(
                        f"Selections can't be made on scalars (field '{f.name}' returns {named}"
                        f" but has selections [{', '.join(s.name for s in f.selections)}])",
                        line=f.line,
                        column=f.column,
                        path=here,
                        extensions={"code": "selectionMismatch", "nodeName": f"field '{f.name}'"},
                    )
                )
            elif f.selections:
                self._validate_selections(
                    named, f.selections, here, declared, used, errors, op_name
                )

    def _validate_args(
        self,
        f: Field,
        fdef: FieldDef,
        path: list[str | int],
        declared: dict[str, VarDef],
        used: set[str],
        errors: list[GraphQLError],
        op_name: str | None,
    ) -> None:
        for arg, value in f.args.items():
            if arg not in fdef.args:
                errors.append(
                    GraphQLError(
                        f"Field '{f.name}' doesn't accept argument '{arg}'",
                        line=f.line,
                        column=f.column,
                        path=[*path, arg],
                        extensions={
                            "code": "argumentNotAccepted",
                            "name": f.name,
                            "typeName": "Field",
                            "argumentName": arg,
                        },
                    )
                )
                continue
            arg_type = _Type.parse(fdef.args[arg])
            if isinstance(value, Var):
                used.add(value.name)
                d = declared.get(value.name)
                if d is None:
                    label = f"operation {op_name}" if op_name else "anonymous query"
                    errors.append(
                        GraphQLError(
                            f"Variable ${value.name} is used by {label} but not declared",
                            line=f.line,
                            column=f.column,
                            path=[*path, arg],
                            extensions={"code": "variableNotDefined", "variableName": value.name},
                        )
                    )
                    continue
                var_type = _Type.parse(d.type)
                if var_type.named != arg_type.named:
                    errors.append(
                        self._mismatch("Type", value.name, arg, var_type, arg_type, f, path)
                    )
                elif arg_type.non_null and not var_type.non_null and not d.has_default:
                    errors.append(
                        self._mismatch("Nullability", value.name, arg, var_type, arg_type, f, path)
                    )
                continue
            ok, _ = _coerce(arg_type, value)
            if not ok:
                errors.append(
                    GraphQLError(
                        f"Argument '{arg}' on Field '{f.name}' has an invalid value"
                        f" ({_literal_text(value)}). Expected type '{arg_type}'.",
                        line=f.line,
                        column=f.column,
                        path=[*path, arg],
                        extensions={
                            "code": "argumentLiteralsIncompatible",
                            "typeName": "Field",
                            "argumentName": arg,
                        },
                    )
                )
        missing = [
            a
            for a, t in fdef.args.items()
            if t.endswith("!") and a not in f.args and a not in fdef.defaults
        ]
        if missing:
            errors.append(
                GraphQLError(
                    f"Field '{f.name}' is missing required arguments: {', '.join(missing)}",
                    line=f.line,
                    column=f.column,
                    path=path,
                    extensions={
                        "code": "missingRequiredArguments",
                        "className": "Field",
                        "name": f.name,
                        "arguments": ", ".join(missing),
                    },
                )
            )

    @staticmethod
    def _mismatch(
        kind: str, var: str, arg: str, var_type: _Type, arg_type: _Type, f: Field, path: list[Any]
    ) -> GraphQLError:
        return GraphQLError(
            f"{kind} mismatch on variable ${var} and argument {arg} ({var_type} / {arg_type})",
            line=f.line,
            column=f.column,
            path=[*path, arg],
            extensions={
                "code": "variableMismatch",
                "variableName": var,
                "typeName": str(var_type),
                "argumentName": arg,
                "errorMessage": f"{kind} mismatch",
            },
        )

    def coerce_variables(
        self, op: Operation, given: dict[str, Any]
    ) -> tuple[dict[str, Any], list[GraphQLError]]:
        """Coerce the request's variables to the operation's declared types."""
        values: dict[str, Any] = {}
        errors: list[GraphQLError] = []
        for d in op.var_defs:
            type_ = _Type.parse(d.type)
            if d.name in given:
                raw = given[d.name]
            elif d.has_default:
                raw = d.default
            else:
                raw = None
            ok, coerced = _coerce(type_, raw)
            if ok:
                values[d.name] = coerced
                continue
            explanation = (
                "Expected value to not be null"
                if raw is None
                else f"Could not coerce value {_json_text(raw)} to {type_.named}"
            )
            errors.append(
                GraphQLError(
                    f"Variable ${d.name} of type {d.type} was provided invalid value",
                    line=d.line,
                    column=d.column,
                    extensions={
                        "value": raw,
                        "problems": [{"path": [], "explanation": explanation}],
                    },
                )
            )
        return values, errors

    # ----------------------------------------------------------------- execution
    def execute(self, op: Operation, variables: dict[str, Any], context: Any) -> ExecutionResult:
        """Run a validated operation; runtime errors null their field (and bubble)."""
        errors: list[GraphQLError] = []
        try:
            data = self._select("Query", None, op.selections, [], variables, context, errors)
        except _NullBubble:
            data = None
        return ExecutionResult(data, errors, True)

    def _select(
        self,
        type_name: str,
        parent: Any,
        selections: list[Field],
        path: list[str | int],
        variables: dict[str, Any],
        context: Any,
        errors: list[GraphQLError],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        fields = self.schema[type_name]
        for f in selections:
            if f.name == "__typename":
                out[f.key] = type_name
                continue
            fdef = fields[f.name]
            here = [*path, f.key]
            ftype = _Type.parse(fdef.type)
            args = dict(fdef.defaults)
            for arg, value in f.args.items():
                if isinstance(value, Var):  # variables are coerced already
                    args[arg] = variables.get(value.name)
                else:
                    _, args[arg] = _coerce(_Type.parse(fdef.args[arg]), value)
            try:
                value = fdef.resolve(parent, args, context)
                out[f.key] = self._complete(ftype, value, f, here, variables, context, errors)
            except GraphQLError as exc:
                exc.path = here
                exc.line, exc.column = f.line, f.column
                errors.append(exc)
                if ftype.non_null:
                    raise _NullBubble() from None
                out[f.key] = None
            except _NullBubble:
                if ftype.non_null:
                    raise
                out[f.key] = None
        return out

    def _complete(
        self,
        type_: _Type,
        value: Any,
        f: Field,
        path: list[str | int],
        variables: dict[str, Any],
        context: Any,
        errors: list[GraphQLError],
    ) -> Any:
        if value is None:
            if type_.non_null:
                raise _NullBubble()
            return None
        if type_.of is not None:
            items = []
            for index, item in enumerate(value):
                items.append(
                    self._complete(type_.of, item, f, [*path, index], variables, context, errors)
                )
            return items
        if type_.base in self.schema:
            assert f.selections is not None
            return self._select(type_.base, value, f.selections, path, variables, context, errors)
        return _serialize(value)


def _serialize(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def run(
    engine: Engine,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    context: Any,
    before_execute: Callable[[], GraphQLError | None] | None = None,
) -> ExecutionResult:
    """Parse, validate, coerce variables and execute one request.

    ``before_execute`` runs once the request is known to be valid (GitHub charges the rate
    limit there); a GraphQLError it returns is answered instead of executing.
    """
    try:
        ops = parse(query)
        op = engine.select_operation(ops, operation_name)
    except GraphQLError as exc:
        return ExecutionResult(None, [exc], False)
    errors = engine.validate(op)
    if errors:
        return ExecutionResult(None, errors, False)
    values, errors = engine.coerce_variables(op, variables or {})
    if errors:
        return ExecutionResult(None, errors, False)
    if before_execute is not None:
        refused = before_execute()
        if refused is not None:
            return ExecutionResult(None, [refused], False)
    return engine.execute(op, values, context)

"""GBNF grammars that make every tool call syntactically valid.

The grammar names only declared tools and gives each argument the type (and enum) its
JSON schema declares, in Gemma 4's native call syntax or in plain JSON. ``auto`` also
allows a plain-text answer; ``required`` forces at least one call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import math
from typing import Any, Literal

from .tool_calls import CALL_END, CALL_START, STRING_QUOTE

CallSyntax = Literal["native", "json"]
ToolChoice = Literal["auto", "required", "none"]

# Gemma 4 may issue parallel calls; models without native tool tokens get one call per
# step (they tend to repeat a call, and each result is shown to them before the next).
MAX_CALLS_PER_STEP = {"native": 3, "json": 1}
# Tool argument strings are names and short texts; a bound keeps a rambling model inside
# max_tokens.
MAX_STRING_CHARS = 256
# Arrays in tool arguments are short lists (domains, device classes); small models
# otherwise ramble.
MAX_ARRAY_ITEMS = 4
# Optional arguments are written in a fixed order; the most telling ones first.
PREFERRED_FIRST = ("name", "area", "floor", "domain")
# JSON numbers: no leading zeros ("007" is not JSON), at most 16 digits each side.
INTEGER_RULE = '"-"? ("0" | [1-9] [0-9]{0,15})'
NUMBER_RULE = INTEGER_RULE + ' ("." [0-9]{1,16})?'
_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: name, description, JSON schema of its arguments.

    ``constraints``, when given, is the stricter schema the grammar enforces (e.g. names
    as enums of what is exposed) while the prompt declares the lighter ``parameters``:
    the names are already in the prompt once, and repeating them in every declaration
    would cost prompt tokens.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, Any] | None = None

    @property
    def grammar_schema(self) -> dict[str, Any]:
        """The schema the grammar enforces: constraints if given, else parameters."""
        return self.constraints if self.constraints is not None else self.parameters


def gbnf_literal(text: str) -> str:
    """Quote text as a GBNF string literal."""
    escaped = (
        text.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )
    return f'"{escaped}"'


class _GrammarBuilder:
    def __init__(
        self,
        syntax: CallSyntax,
        markers_as_tokens: bool,
        *,
        max_string_chars: int = MAX_STRING_CHARS,
        max_array_items: int = MAX_ARRAY_ITEMS,
        json_char: str = _JSON_CHAR,
    ) -> None:
        self.syntax = syntax
        self.markers_as_tokens = markers_as_tokens
        self.max_string_chars = max_string_chars
        self.max_array_items = max_array_items
        self.json_char = json_char
        self.rules: dict[str, str] = {}

    def marker(self, text: str) -> str:
        """Return a Gemma control marker for the grammar.

        It is matched as the single special token when the vocab has it.
        """
        return text if self.markers_as_tokens else gbnf_literal(text)

    def add(self, name: str, body: str) -> str:
        self.rules.setdefault(name, body)
        return name

    def unique(self, base: str, body: str) -> str:
        name = base
        index = 1
        while name in self.rules and self.rules[name] != body:
            index += 1
            name = f"{base}-{index}"
        self.rules[name] = body
        return name

    # primitive values
    def string_rule(self) -> str:
        if self.syntax == "json":
            self.add("json-char", self.json_char)
            return self.add(
                "string", f'"\\"" json-char{{0,{self.max_string_chars}}} "\\""'
            )
        quote = self.marker(STRING_QUOTE)
        return self.add("string", f"{quote} [^<]{{0,{self.max_string_chars}}} {quote}")

    def string_literal(self, value: str) -> str:
        if self.syntax == "json":
            return gbnf_literal(json.dumps(value, ensure_ascii=False))
        quote = self.marker(STRING_QUOTE)
        return f"{quote} {gbnf_literal(value)} {quote}"

    def any_value(self) -> str:
        string = self.string_rule()
        self.add("number", NUMBER_RULE)
        self.add("ws", '" "?')
        if self.syntax == "json":
            self.add(
                "any-object",
                '"{" ws (string ":" ws value ("," ws string ":" ws value)*)? "}"',
            )
        else:
            self.add("key", "[A-Za-z_] [A-Za-z0-9_]*")
            self.add("any-object", '"{" (key ":" value ("," key ":" value)*)? "}"')
        self.add("any-array", '"[" ws (value ("," ws value)*)? "]"')
        return self.add(
            "value",
            f'{string} | number | "true" | "false" | "null" | any-object | any-array',
        )

    def value_rule(self, schema: dict[str, Any], hint: str) -> str:
        if schema.get("enum"):
            options = [
                self.string_literal(v)
                if isinstance(v, str)
                else gbnf_literal(json.dumps(v))
                for v in schema["enum"]
            ]
            return self.unique(f"{hint}-enum", " | ".join(options))
        kind = schema.get("type")
        if kind == "string":
            return self.string_rule()
        if kind in ("integer", "number") and (
            "minimum" in schema or "maximum" in schema
        ):
            return self.unique(
                f"{hint}-range", bounded_number_rule(schema, integer=kind == "integer")
            )
        if kind == "integer":
            return self.add("integer", INTEGER_RULE)
        if kind == "number":
            return self.add("number", NUMBER_RULE)
        if kind == "boolean":
            return self.add("boolean", '"true" | "false"')
        if kind == "array":
            item = self.value_rule(schema.get("items") or {}, f"{hint}-item")
            sep = '"," " "?' if self.syntax == "json" else '","'
            return self.unique(
                f"{hint}-array",
                f'"[" ({item} ({sep} {item}){{0,{self.max_array_items - 1}}})? "]"',
            )
        if kind == "object" and schema.get("properties"):
            return self.object_rule(schema, hint)
        for union_key in ("anyOf", "oneOf"):
            if schema.get(union_key):
                options = [
                    self.value_rule(sub, f"{hint}-{i}")
                    for i, sub in enumerate(schema[union_key])
                ]
                return self.unique(f"{hint}-union", " | ".join(options))
        return self.any_value()

    def member(self, key: str, schema: dict[str, Any], hint: str) -> str:
        value = self.value_rule(schema, f"{hint}-{_rule_name(key)}")
        if self.syntax == "json":
            return f'{gbnf_literal(json.dumps(key))} ":" " "? {value}'
        return f'{gbnf_literal(key)} ":" {value}'

    def object_rule(self, schema: dict[str, Any], hint: str) -> str:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = [
            key for key in properties if key in set(schema.get("required") or [])
        ]
        optional = sorted(
            (key for key in properties if key not in required),
            key=lambda k: PREFERRED_FIRST.index(k)
            if k in PREFERRED_FIRST
            else len(PREFERRED_FIRST),
        )
        members = {key: self.member(key, properties[key], hint) for key in properties}
        sep = '"," " "?' if self.syntax == "json" else '","'
        body = " ".join(
            f"{sep} {members[key]}" if i else members[key]
            for i, key in enumerate(required)
        )
        # A schema whose anyOf lists single required keys ("at least one of") makes one
        # of those the first optional member present.
        leaders = _at_least_one_of(schema)
        if required and not leaders:
            body += "".join(f" ({sep} {members[key]})?" for key in optional)
        elif optional:
            # Without a required member, the first present member takes no separator.
            lead = f"{sep} " if required else ""
            alternatives = []
            for index, key in enumerate(optional):
                if leaders and key not in leaders:
                    continue
                rest = "".join(
                    f" ({sep} {members[later]})?" for later in optional[index + 1 :]
                )
                alternatives.append(f"{lead}{members[key]}{rest}")
            body += (
                (" " if required else "")
                + "("
                + " | ".join(f"({alt})" for alt in alternatives)
            )
            body += ")" if leaders else ")?"
        return self.unique(f"{hint}-object", f'"{{" {body} "}}"')

    def call_rule(self, tool: ToolSpec) -> str:
        hint = f"tool-{_rule_name(tool.name)}"
        params = tool.grammar_schema or {}
        args = (
            self.object_rule(params, hint)
            if params.get("properties")
            else self.add("empty-object", '"{" "}"')
        )
        if self.syntax == "json":
            body = (
                f'"{{\\"name\\": " {gbnf_literal(json.dumps(tool.name))}'
                f' ", \\"arguments\\": " {args} "}}"'
            )
        else:
            body = (
                f'{self.marker(CALL_START)} "call:" {gbnf_literal(tool.name)}'
                f" {args} {self.marker(CALL_END)}"
            )
        return self.unique(hint, body)


# Bounds of numbers without a declared minimum or maximum (16 digits, as the unbounded
# rules).
_LARGEST = 10**16 - 1
_FRACTION = '"." [0-9]{1,4}'


def _digit_patterns(low: int, high: int) -> list[str]:
    """Return GBNF sequences matching exactly the integers low..high.

    0 <= low <= high. Without leading zeros: the range is split where digits roll over
    (199|200-299|300-349 ...), each piece a sequence of fixed digits and digit classes.
    """
    stops = {high}
    nines = 1
    while (
        low
        <= (
            stop := int(str(low)[:-nines] + "9" * nines)
            if nines <= len(str(low))
            else 10**nines - 1
        )
        < high
    ):
        stops.add(stop)
        nines += 1
    zeros = 1
    while low < (stop := (high + 1) - (high + 1) % 10**zeros - 1) <= high:
        stops.add(stop)
        zeros += 1
    patterns = []
    start = low
    for stop in sorted(stops):
        first, last = str(start), str(stop)
        if len(first) != len(last):
            # Only when start is 0..9 below a longer stop; split once more.
            patterns.extend(_digit_patterns(start, 10 ** len(first) - 1))
            patterns.extend(_digit_patterns(10 ** len(first), stop))
        else:
            patterns.append(
                " ".join(
                    f'"{a}"' if a == b else f"[{a}-{b}]"
                    for a, b in zip(first, last, strict=True)
                )
            )
        start = stop + 1
    return patterns


def _int_range(low: int, high: int) -> list[str]:
    """Return the alternatives for the integers low..high (either may be negative)."""
    options = []
    if low < 0:
        negative = _digit_patterns(max(1, -high) if high < 0 else 1, -low)
        options.append('"-" (' + " | ".join(f"({p})" for p in negative) + ")")
    if high >= 0:
        options.extend(f"({p})" for p in _digit_patterns(max(low, 0), high))
    return options


class GrammarError(ValueError):
    """A schema the grammar cannot express (no value lies within its bounds)."""


def bounded_number_rule(schema: dict[str, Any], *, integer: bool) -> str:
    """Return a rule for a number within the schema's minimum/maximum.

    Integers always; a decimal fraction only on non-negative integer parts below the
    maximum, so every value the rule allows is in range. Bounds with no whole number
    between them (0.1 to 0.9) allow that integer part with any fraction: the few values
    just outside (0.05) are then refused by the structure's validation.
    """
    minimum, maximum = (
        float(schema.get("minimum", -_LARGEST)),
        float(schema.get("maximum", _LARGEST)),
    )
    low, high = math.ceil(minimum), math.floor(maximum)
    bounds = f"[{schema.get('minimum')}, {schema.get('maximum')}]"
    if minimum > maximum or (integer and low > high):
        raise GrammarError(f"no {'whole ' if integer else ''}number lies in {bounds}")
    options = _int_range(low, high) if low <= high else []
    if not integer and max(low, 0) <= high - 1:
        options.append(
            "(" + " | ".join(_int_range(max(low, 0), high - 1)) + f") {_FRACTION}"
        )
    elif not integer and low > high:
        if minimum < 0:
            raise GrammarError(f"negative fractions such as {bounds} are not supported")
        options.append(f'"{high}" {_FRACTION}')
    return " | ".join(options)


def _at_least_one_of(schema: dict[str, Any]) -> set[str]:
    """Return the keys of an ``anyOf: [{"required": [k]}, ...]`` clause.

    That is JSON schema's "at least one of".
    """
    keys: set[str] = set()
    for option in schema.get("anyOf") or []:
        required = option.get("required") if isinstance(option, dict) else None
        if not (isinstance(required, list) and len(required) == 1):
            return set()
        keys.add(required[0])
    return keys & set(schema.get("properties") or {})


def _rule_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()
    return cleaned or "x"


def build_output_grammar(
    tools: list[ToolSpec],
    syntax: CallSyntax,
    tool_choice: ToolChoice = "auto",
    *,
    markers_as_tokens: bool = False,
) -> str | None:
    """Return the grammar for one generation step, or None when no constraint applies.

    No constraint applies when no tools are offered.
    """
    if not tools or tool_choice == "none":
        return None
    builder = _GrammarBuilder(syntax, markers_as_tokens)
    calls = [builder.call_rule(tool) for tool in sorted(tools, key=lambda t: t.name)]
    builder.add("call", " | ".join(calls))
    sep = '"\\n"?' if syntax == "json" else ""
    more = f" ({sep} call)?" * (MAX_CALLS_PER_STEP[syntax] - 1)
    builder.add("calls", f"call{more}")
    if tool_choice == "required":
        root = "calls"
    else:
        # A text answer may not begin like a call, so the first character decides.
        first = "[^{<]" if syntax == "json" else "[^<]"
        builder.add("text", f"{first} .*")
        root = "calls | text"
    lines = [f"root ::= {root}"] + [
        f"{name} ::= {body}" for name, body in builder.rules.items()
    ]
    return "\n".join(lines) + "\n"


# Structured output (AI Task data): longer texts and lists than tool arguments.
STRUCTURED_MAX_STRING_CHARS = 1024
STRUCTURED_MIN_STRING_CHARS = 16
STRUCTURED_MAX_ARRAY_ITEMS = 32
# Structured texts: no \\u escapes (other characters are written as themselves), so each
# character of the grammar's string is at most two characters of output.
_STRUCTURED_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" ["\\/bfnrt]'


def build_json_grammar(schema: dict[str, Any], max_chars: int | None = None) -> str:
    """Return the grammar for one JSON value matching ``schema``.

    The schema may use objects, arrays, enums, bounded numbers and anyOf; the answer is
    that value and nothing else.

    With ``max_chars`` (the answer's token budget: every token writes at least one
    character of ASCII text), string lengths are chosen so that the longest answer the
    grammar allows fits, so an answer is not cut off before it is complete.
    """
    string_chars = STRUCTURED_MAX_STRING_CHARS
    if max_chars is not None:
        low, high = STRUCTURED_MIN_STRING_CHARS, STRUCTURED_MAX_STRING_CHARS
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (
                (middle, high)
                if max_json_chars(schema, middle) <= max_chars
                else (low, middle - 1)
            )
        string_chars = low
    builder = _GrammarBuilder(
        "json",
        False,
        max_string_chars=string_chars,
        max_array_items=STRUCTURED_MAX_ARRAY_ITEMS,
        json_char=_STRUCTURED_JSON_CHAR,
    )
    root = builder.value_rule(schema, "data")
    lines = [f"root ::= {root}"] + [
        f"{name} ::= {body}" for name, body in builder.rules.items()
    ]
    return "\n".join(lines) + "\n"


def max_json_chars(schema: dict[str, Any], string_chars: int) -> float:
    """Return the length of the longest JSON text the grammar allows for ``schema``.

    The grammar is the structured-output one; the length is inf if unbounded.
    """
    if schema.get("enum"):
        return max(
            len(json.dumps(value, ensure_ascii=False)) for value in schema["enum"]
        )
    kind = schema.get("type")
    if kind == "string":
        return 2 * string_chars + 2
    if kind in ("integer", "number"):
        if "minimum" in schema or "maximum" in schema:
            low = math.ceil(float(schema.get("minimum", -_LARGEST)))
            high = math.floor(float(schema.get("maximum", _LARGEST)))
            return max(len(str(low)), len(str(high))) + (
                0 if kind == "integer" else len(".0000")
            )
        return 17 if kind == "integer" else 34
    if kind == "boolean":
        return 5
    if kind == "array":
        item = max_json_chars(schema.get("items") or {}, string_chars)
        return 2 + STRUCTURED_MAX_ARRAY_ITEMS * (item + 2)
    if kind == "object" and schema.get("properties"):
        return 2 + sum(
            len(json.dumps(key)) + 4 + max_json_chars(value, string_chars)
            for key, value in schema["properties"].items()
        )
    for union_key in ("anyOf", "oneOf"):
        if schema.get(union_key):
            return max(
                max_json_chars(option, string_chars) for option in schema[union_key]
            )
    return math.inf

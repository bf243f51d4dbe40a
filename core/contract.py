"""The declarative engineering contract: phases, allowed tools, artifacts and gates, read from one YAML file.

A contract (``contracts/engineering.yaml`` is the built-in one, commented key by key) declares the phases the
Engineering subgraph works through (PLAN -> TDD -> IMPL -> REVIEW -> COMPLETE), what each role may do in each
phase (tools and path patterns), the JSON Schema of what it hands in with ``finish``, and the gate that decides.

:func:`load_contract` validates a file against ``contracts/contract.schema.json`` and then makes the cross-checks
a schema cannot express; every problem raises :class:`ContractError` as ``<file>:<line>: <problem>`` so a person
can fix the file. The loaded :class:`Contract` then answers the graph's questions: may this tool call happen
(:meth:`Phase.check_tool`), is this artifact acceptable (:meth:`Phase.check_artifact`), which tools does the model
get (:meth:`Phase.tool_specs`), is this file locked (:meth:`Contract.is_locked`).

Path patterns use .gitignore semantics (pathspec's ``GitIgnoreSpecPattern``, the non-deprecated form of
``gitwildmatch``): ``tests/**`` is everything under the root ``tests/``; ``**`` is every file; a pattern without a
``/`` such as ``conftest.py`` matches that name in every folder; ``/conftest.py`` only the root one.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from pathspec import PathSpec
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

if TYPE_CHECKING:
    from core.settings import Settings

CONTRACT_DIR = Path(__file__).resolve().parent / "contracts"
DEFAULT_CONTRACT = CONTRACT_DIR / "engineering.yaml"
SCHEMA_PATH = CONTRACT_DIR / "contract.schema.json"
IMPLICIT_TOOLS = ("finish",)
KNOWN_TOOLS = ("list_files", "read_file", "write_file", "run_tests")
PATH_TOOLS = ("read_file", "write_file")
"""Tools that take a ``path`` argument; their rule must list ``paths``."""
GATES = ("plan_valid", "tests_red", "tests_green", "review_clean", "signed")
SIGNING_GATE = "signed"
"""The gate of the system's phase: signing what was verified (no model works in it)."""
MODES = ("strict", "permissive")

JsonPath = tuple[str | int, ...]

_TOOL_PARAMETERS: dict[str, dict[str, Any]] = {
    "list_files": {},
    "read_file": {"path": {"type": "string", "description": "File path relative to the project root."}},
    "write_file": {
        "path": {"type": "string", "description": "File path relative to the project root."},
        "content": {"type": "string", "description": "The whole new content of the file."},
    },
    "run_tests": {},
}
ARGUMENT_ALIASES: dict[str, tuple[str, ...]] = {
    "path": ("file_path", "filepath", "filename", "file_name", "file"),
    "content": ("code", "contents", "file_content", "text", "body"),
}
"""Names small models give a tool's arguments instead of its own (``file_path`` for ``path``, ``code`` for
``content``), the same way every time: taken as the argument they mean when it is missing (see
:func:`normalize_arguments`)."""
_TOOL_DESCRIPTIONS = {
    "list_files": "List the files of the project (paths relative to the project root).",
    "read_file": "Read one file of the project.",
    "write_file": "Create or replace one file of the project with the given content.",
    "run_tests": "Run the project's tests and return the result.",
    "finish": "Hand in the result of this phase; its arguments are checked and the phase's gate decides.",
}


def normalize_arguments(tool: str, args: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A tool call's arguments with aliased names renamed to the tool's own (:data:`ARGUMENT_ALIASES`).

    Only for the built-in tools that take the argument, only when the tool's own name is missing and exactly one
    alias is present; anything else is left for the tool's checks to refuse.

    Returns:
        ``(arguments, renamed)``: ``renamed`` lists ``"file_path -> path"`` for each rename (empty: unchanged).
    """
    params = _TOOL_PARAMETERS.get(tool) or {}
    out, renamed = dict(args), []
    for own, aliases in ARGUMENT_ALIASES.items():
        if own not in params or own in out:
            continue
        present = [alias for alias in aliases if alias in out]
        if len(present) == 1:
            out[own] = out.pop(present[0])
            renamed.append(f"{present[0]} -> {own}")
    return out, renamed


class ContractError(ValueError):
    """A contract file that cannot be used; the message is ``<file>:<line>: <problem>`` (line 1-based).

    Attributes:
        file: the contract file.
        line: line of the offending YAML node (for a missing key: the mapping lacking it); 0 when the file
            could not be read at all.
        problem: the problem in words.
    """

    def __init__(self, file: Path, line: int, problem: str) -> None:
        super().__init__(f"{file}:{line}: {problem}")
        self.file = file
        self.line = line
        self.problem = problem


def normalize_path(path: str) -> str:
    """Return ``path`` in canonical form, relative to the project root: ``'./a//b'`` -> ``'a/b'``.

    Args:
        path: a path a model passed to a tool.

    Returns:
        The path without ``.`` parts, empty parts or a trailing ``/``.

    Raises:
        ValueError: the path is empty, absolute, has a ``..`` or ``.git`` part, a backslash or a NUL; the message
            tells a model what to pass instead.
    """
    if "\0" in path:
        raise ValueError(f"path {path!r} contains a NUL character: give a plain file path such as 'app.py'")
    if "\\" in path:
        raise ValueError(f"path {path!r} contains a backslash: separate folders with '/', e.g. 'tests/test_app.py'")
    if path.startswith("/"):
        raise ValueError(f"path {path!r} is absolute: give it relative to the project root, e.g. 'app.py'")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"path {path!r} leaves the project ('..' is not allowed): give a path inside it")
    if any(p.casefold() == ".git" for p in parts):
        raise ValueError(f"path {path!r} is inside .git, which no tool may touch")
    if not parts:
        raise ValueError(f"path {path!r} names no file: give a file path relative to the project root, e.g. 'app.py'")
    return "/".join(parts)


@functools.lru_cache(maxsize=256)
def _spec(pattern: str) -> PathSpec:
    """The compiled pattern. Raises ValueError (pathspec's pattern error) or re.error for an invalid one."""
    return PathSpec.from_lines(GitIgnoreSpecPattern, [pattern])


def _first_match(patterns: tuple[str, ...], path: str) -> str | None:
    """The first of ``patterns`` matching the normalized ``path``, or None."""
    return next((p for p in patterns if _spec(p).match_file(path)), None)


@dataclass(frozen=True)
class ToolRule:
    """What one tool may do in one phase.

    Attributes:
        name: the tool name (one of ``KNOWN_TOOLS``).
        paths: patterns a path argument must match (``"**"``: any file); empty for a tool that takes no path.
        deny: patterns a path argument must not match, checked after ``paths``.
        reason: why ``deny`` is there, appended to a refusal so a model knows what to do instead ("" for none).
    """

    name: str
    paths: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    reason: str = ""

    def check_path(self, path: str, *, phase: str = "") -> str | None:
        """Whether this tool may touch ``path``.

        Args:
            path: the path argument as the model gave it (normalized here).
            phase: the phase name, for the refusal's wording.

        Returns:
            None if allowed, else the reason in words a model can act on, e.g. ``"write_file may not touch
            tests/test_app.py in IMPL: it matches the denied pattern 'tests/**' (the tests ... are locked ...)"``.
        """
        where = f" in {phase}" if phase else ""
        try:
            norm = normalize_path(path)
        except ValueError as exc:
            return f"{self.name} refused{where}: {exc}"
        if _first_match(self.paths, norm) is None:
            allowed = ", ".join(repr(p) for p in self.paths) or "none"
            return f"{self.name} may not touch {norm}{where}: it matches none of the allowed patterns ({allowed})"
        denied = _first_match(self.deny, norm)
        if denied is not None:
            why = f" ({self.reason})" if self.reason else ""
            return f"{self.name} may not touch {norm}{where}: it matches the denied pattern {denied!r}{why}"
        return None


@dataclass(frozen=True)
class Phase:
    """One phase of the contract.

    Attributes:
        name: e.g. ``"PLAN"``.
        role: architect | tester | developer | system.
        tools: tool name -> rule, in file order (``finish`` is implicit and not in here).
        artifact: JSON Schema (draft 2020-12) of the ``finish`` arguments.
        gate: the gate name run on ``finish``.
        next: the phase after a passed gate; None ends the run.
        on_fail: the phase after a failed gate.
        max_rounds: rounds in this phase before a person is asked for guidance (>= 1).
    """

    name: str
    role: str
    tools: dict[str, ToolRule]
    artifact: dict[str, Any]
    gate: str
    next: str | None
    on_fail: str
    max_rounds: int

    def check_tool(self, tool: str, args: dict[str, Any]) -> str | None:
        """Whether a tool call is allowed in this phase.

        ``finish`` is always allowed here (its arguments are checked by :meth:`check_artifact`). A tool that takes
        a path has ``args["path"]`` normalized and checked against the rule's allowed, then denied, patterns.

        Args:
            tool: the tool name the model called.
            args: its arguments.

        Returns:
            None if allowed, else why, naming the tools allowed in this phase for an unlisted tool.
        """
        if tool in IMPLICIT_TOOLS:
            return None
        rule = self.tools.get(tool)
        if rule is None:
            allowed = ", ".join([*self.tools, *IMPLICIT_TOOLS])
            return f"tool {tool!r} is not allowed in {self.name}; the tools allowed here are: {allowed}"
        if not rule.paths:
            return None
        path = args.get("path")
        if not isinstance(path, str):
            return f"{tool} needs a 'path' argument: a file path relative to the project root, e.g. 'app.py'"
        return rule.check_path(path, phase=self.name)

    def check_artifact(self, artifact: Any) -> list[str]:
        """Validate what ``finish`` hands in against this phase's artifact schema.

        Args:
            artifact: the ``finish`` arguments (any JSON value).

        Returns:
            One ``'<json path>: <message>'`` per error, e.g. ``"acceptance_criteria[0].id: 'X1' does not match
            '^AC[0-9]+$'"`` (``(root)`` for the artifact itself), sorted by path; ``[]`` when valid.
        """
        errors = Draft202012Validator(self.artifact).iter_errors(artifact)
        ordered = sorted(errors, key=lambda e: (_sort_key(tuple(e.absolute_path)), e.message))
        return [f"{_format_path(tuple(e.absolute_path))}: {e.message}" for e in ordered]

    def example(self) -> dict[str, Any] | None:
        """The first ``examples`` item of the artifact schema (checked against it at load), or None."""
        examples = self.artifact.get("examples") or []
        return examples[0] if examples and isinstance(examples[0], dict) else None

    def tool_specs(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools`` entries of this phase: its tools in file order, then ``finish``.

        Returns:
            ``[{"type": "function", "function": {"name", "description", "parameters"}}, ...]``; ``finish``'s
            parameters are (a copy of) the artifact schema; path tools' descriptions name their patterns.
        """
        specs = []
        for name, rule in self.tools.items():
            props = copy.deepcopy(_TOOL_PARAMETERS[name])
            parameters = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
            specs.append(_function(name, _TOOL_DESCRIPTIONS[name] + _pattern_note(rule), parameters))
        finish = _TOOL_DESCRIPTIONS["finish"]
        if description := self.artifact.get("description"):
            finish = f"{finish} {description}"
        parameters = {k: copy.deepcopy(v) for k, v in self.artifact.items() if k != "examples"}  # shown in the prompt
        specs.append(_function("finish", finish, parameters))
        return specs


@dataclass(frozen=True)
class Contract:
    """A loaded, validated contract.

    Attributes:
        path: the file it was read from.
        version: the contract version, copied into signed verifications.
        mode: strict (refuse) or permissive (log and go on).
        test_dir: folder of the tests, relative to the project root.
        locked: patterns of the files hashed and locked when TDD ends.
        first: the phase a run starts in.
        phases: name -> phase, in file order.
        digest: sha256 hex of the file's bytes.
    """

    path: Path
    version: str
    mode: Literal["strict", "permissive"]
    test_dir: str
    locked: tuple[str, ...]
    first: str
    phases: dict[str, Phase]
    digest: str

    def phase(self, name: str) -> Phase:
        """The phase called ``name``. Raises KeyError naming the known phases if there is none."""
        try:
            return self.phases[name]
        except KeyError:
            raise KeyError(f"no phase {name!r} in {self.path}; its phases are: {', '.join(self.phases)}") from None

    def is_locked(self, path: str) -> bool:
        """Whether ``path`` (relative to the project root) matches ``locked``. Raises ValueError for a bad path."""
        return _first_match(self.locked, normalize_path(path)) is not None

    def with_mode(self, mode: str | None) -> Contract:
        """A copy with ``mode`` overridden (None: this contract). Raises ValueError for a mode not in MODES."""
        if mode is None:
            return self
        if mode not in MODES:
            raise ValueError(f"contract mode must be one of {', '.join(MODES)}, not {mode!r}")
        return dataclasses.replace(self, mode=cast(Literal["strict", "permissive"], mode))


def load_contract(path: Path | None = None, *, gates: Collection[str] = ()) -> Contract:
    """Read, validate and cross-check a contract file.

    The YAML is loaded with ``yaml.safe_load`` and composed (``yaml.compose``) to know the line of every node;
    it is validated against ``SCHEMA_PATH``, then checked for what a schema cannot express: ``first``, every
    ``next`` and ``on_fail`` name a phase; every artifact is a valid JSON Schema; every tool is in KNOWN_TOOLS
    (path tools with ``paths``, others without); every gate is in ``gates`` (if given); following ``next`` from
    ``first`` ends at a phase whose next is null without a cycle; every pattern compiles.

    Args:
        path: the contract file; None for DEFAULT_CONTRACT.
        gates: the gate names registered in code; empty to skip that check.

    Returns:
        The contract.

    Raises:
        ContractError: the file is missing or unreadable (line 0), is not valid YAML (line of the YAML mark),
            or breaks a rule (line of the offending node; for a missing key, of the mapping lacking it). When a
            stage finds several problems, all are listed, one ``<file>:<line>: <problem>`` per line.
    """
    path = path or DEFAULT_CONTRACT
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ContractError(path, 0, f"cannot read the contract: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(path, raw[: exc.start].count(b"\n") + 1, "the contract is not UTF-8 text") from exc
    data, lines = _parse(path, text)
    problems = _schema_problems(data, lines)
    if not problems:
        problems = _cross_problems(data, lines, gates)
    if problems:
        _raise(path, problems)
    return _build(path, data, hashlib.sha256(raw).hexdigest())


def load_for(settings: Settings) -> Contract:
    """The contract the settings name, checked against GATES, with ``contract_mode`` applied.

    Cached per (path, modification time), so an edited file is read again.

    Args:
        settings: uses ``contract_path`` (None: DEFAULT_CONTRACT) and ``contract_mode`` (None: the file's mode).

    Returns:
        The contract.

    Raises:
        ContractError: like :func:`load_contract`.
    """
    path = Path(settings.contract_path or DEFAULT_CONTRACT)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return load_contract(path, gates=GATES)  # raises ContractError naming the path
    return _load_cached(path, mtime).with_mode(settings.contract_mode)


@functools.lru_cache(maxsize=8)
def _load_cached(path: Path, mtime_ns: int) -> Contract:
    """load_contract keyed by the file's modification time, so an edited file is read again."""
    return load_contract(path, gates=GATES)


# --- parsing and line numbers -------------------------------------------------------------------------------


def _parse(path: Path, text: str) -> tuple[Any, dict[JsonPath, int]]:
    """The data of ``text`` and the 1-based line of each JSON path. Raises ContractError on a YAML error."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = " ".join(str(p) for p in (getattr(exc, "context", None), getattr(exc, "problem", None)) if p)
        raise ContractError(path, line, f"YAML syntax error: {problem or exc}") from exc
    lines: dict[JsonPath, int] = {(): node.start_mark.line + 1 if node is not None else 1}
    if node is not None:
        lines.update(_node_lines(node, (), set()))
    return data, lines


def _node_lines(node: yaml.Node, at: JsonPath, seen: set[int]) -> Iterator[tuple[JsonPath, int]]:
    """(path, line) of every node under ``node``: a mapping value at its key's line, a list item at its own."""
    if id(node) in seen:  # a recursive alias
        return
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*at, str(key.value))
            yield sub, key.start_mark.line + 1
            yield from _node_lines(value, sub, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield (*at, i), item.start_mark.line + 1
            yield from _node_lines(item, (*at, i), seen)


def _line(lines: dict[JsonPath, int], at: JsonPath) -> int:
    """The line of ``at``, or of its nearest ancestor the YAML has a node for."""
    at = tuple(p if isinstance(p, int) else str(p) for p in at)
    while at not in lines:
        at = at[:-1]
    return lines[at]


def _format_path(at: JsonPath) -> str:
    """``("a", 0, "b")`` -> ``"a[0].b"``; ``()`` -> ``"(root)"``."""
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _sort_key(at: JsonPath) -> tuple[tuple[int, int, str], ...]:
    """A key ordering paths with list indexes numerically."""
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in at)


def _raise(path: Path, problems: list[tuple[int, str]]) -> None:
    """Raise one ContractError for the first problem (by line), listing the others after it."""
    unique = sorted(set(problems))
    line, problem = unique[0]
    rest = "".join(f"\n{path}:{ln}: {p}" for ln, p in unique[1:])
    raise ContractError(path, line, problem + rest)


# --- checks ---------------------------------------------------------------------------------------------------


@functools.cache
def _contract_validator() -> Draft202012Validator:
    """The validator of contract files (SCHEMA_PATH), read once."""
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def _schema_problems(data: Any, lines: dict[JsonPath, int]) -> list[tuple[int, str]]:
    """(line, problem) for every error of ``data`` against the contract schema."""
    problems = []
    for error in _contract_validator().iter_errors(data):
        at = tuple(error.absolute_path)
        target = at
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            extra = [k for k in error.instance if k not in known]
            target = (*at, extra[0]) if extra else at
        problems.append((_line(lines, target), f"{_format_path(at)}: {_schema_message(error)}"))
    return problems


def _schema_message(error: ValidationError) -> str:
    """The jsonschema message, with the schema's description of the value when it has one."""
    if error.validator == "required" or not isinstance(error.schema, dict):
        return error.message
    hint = error.schema.get("description")
    return f"{error.message} ({hint})" if hint and len(error.message) < 200 else error.message


def _cross_problems(data: dict[str, Any], lines: dict[JsonPath, int], gates: Collection[str]) -> list[tuple[int, str]]:
    """(line, problem) for every rule of the contract the schema cannot express."""
    phases: dict[str, dict[str, Any]] = data["phases"]
    names = ", ".join(phases)
    problems: list[tuple[int, str]] = []

    def add(at: JsonPath, problem: str) -> None:
        problems.append((_line(lines, at), problem))

    if data["first"] not in phases:
        add(("first",), f"first: {data['first']!r} is not a phase (phases: {names})")
    try:
        normalize_path(data["test_dir"])
    except ValueError as exc:
        add(("test_dir",), f"test_dir: {exc}")
    problems += _pattern_problems(data["locked"], ("locked",), lines)
    for name, phase in phases.items():
        at: JsonPath = ("phases", name)
        for key in ("next", "on_fail"):
            if phase[key] is not None and phase[key] not in phases:
                add((*at, key), f"phases.{name}.{key}: {phase[key]!r} is not a phase (phases: {names})")
        if gates and phase["gate"] not in gates:
            add((*at, "gate"), f"phases.{name}.gate: unknown gate {phase['gate']!r} (gates: {', '.join(gates)})")
        elif (phase["gate"] == SIGNING_GATE) != (phase["role"] == "system"):
            add(
                (*at, "gate"),
                f"phases.{name}.gate: the {SIGNING_GATE!r} gate is the system's phase (role: system), and the "
                "system's phase has that gate only",
            )
        try:
            Draft202012Validator.check_schema(phase["artifact"])
        except SchemaError as exc:
            bad = (*at, "artifact", *exc.absolute_path)
            add(bad, f"{_format_path(bad)}: not a valid JSON Schema: {exc.message}")
        else:
            for i, example in enumerate(phase["artifact"].get("examples") or []):
                wrong = next(iter(Draft202012Validator(phase["artifact"]).iter_errors(example)), None)
                if wrong is not None:
                    bad = (*at, "artifact", "examples", i)
                    add(bad, f"{_format_path(bad)}: the example does not fit its schema: {wrong.message}")
        for tool, rule in phase["tools"].items():
            problems += _tool_problems(tool, rule, (*at, "tools", tool), lines)
    if not problems:
        problems += _cycle_problems(data, lines)
    return problems


def _tool_problems(tool: str, rule: dict[str, Any], at: JsonPath, lines: dict[JsonPath, int]) -> list[tuple[int, str]]:
    """(line, problem) for a tool rule: a known tool, ``paths`` exactly for path tools, patterns that compile."""
    where = _format_path(at)
    if tool in IMPLICIT_TOOLS:
        return [(_line(lines, at), f"{where}: {tool} is always allowed; do not list it")]
    if tool not in KNOWN_TOOLS:
        return [(_line(lines, at), f"{where}: unknown tool {tool!r} (known tools: {', '.join(KNOWN_TOOLS)})")]
    if tool in PATH_TOOLS and not rule.get("paths"):
        return [(_line(lines, at), f'{where}: {tool} takes a path, so its rule needs paths (e.g. ["**"])')]
    if tool not in PATH_TOOLS and (rule.get("paths") or rule.get("deny")):
        return [(_line(lines, at), f"{where}: {tool} takes no path, so it has no paths or deny")]
    problems = []
    for key in ("paths", "deny"):
        problems += _pattern_problems(rule.get(key, []), (*at, key), lines)
    return problems


def _pattern_problems(patterns: list[str], at: JsonPath, lines: dict[JsonPath, int]) -> list[tuple[int, str]]:
    """(line, problem) for each pattern of ``patterns`` that does not compile."""
    problems = []
    for i, pattern in enumerate(patterns):
        try:
            _spec(pattern)
        except (ValueError, re.error) as exc:
            problems.append((_line(lines, (*at, i)), f"{_format_path((*at, i))}: bad pattern {pattern!r}: {exc}"))
    return problems


def _cycle_problems(data: dict[str, Any], lines: dict[JsonPath, int]) -> list[tuple[int, str]]:
    """The problem, if following ``next`` from ``first`` comes back to a phase instead of reaching null."""
    phases = data["phases"]
    seen: list[str] = []
    name: str | None = data["first"]
    while name is not None:
        if name in seen:
            route = " -> ".join([*seen, name])
            last = seen[-1]
            problem = f"phases.{last}.next: the phases form a cycle ({route}); following next must end at null"
            return [(_line(lines, ("phases", last, "next")), problem)]
        seen.append(name)
        name = phases[name]["next"]
    return []


# --- building -------------------------------------------------------------------------------------------------


def _build(path: Path, data: dict[str, Any], digest: str) -> Contract:
    """The Contract of validated ``data``."""
    phases = {
        name: Phase(
            name=name,
            role=p["role"],
            tools={
                tool: ToolRule(tool, tuple(r.get("paths", ())), tuple(r.get("deny", ())), r.get("reason", ""))
                for tool, r in p["tools"].items()
            },
            artifact=p["artifact"],
            gate=p["gate"],
            next=p["next"],
            on_fail=p["on_fail"],
            max_rounds=p["max_rounds"],
        )
        for name, p in data["phases"].items()
    }
    return Contract(
        path=path,
        version=data["version"],
        mode=data["mode"],
        test_dir=normalize_path(data["test_dir"]),
        locked=tuple(data["locked"]),
        first=data["first"],
        phases=phases,
        digest=digest,
    )


def _function(name: str, description: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI ``tools`` entry."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


def _pattern_note(rule: ToolRule) -> str:
    """The sentence telling a model which paths a tool may touch ('' for a tool without paths)."""
    if not rule.paths:
        return ""
    allowed = "any file" if "**" in rule.paths else ", ".join(rule.paths)
    note = f" Allowed paths: {allowed}."
    if rule.deny:
        note += f" Refused paths: {', '.join(rule.deny)}"
        note += f" ({rule.reason})." if rule.reason else "."
    return note

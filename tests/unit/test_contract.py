"""The engineering contract: the built-in file, line-exact errors of broken files, tool and artifact checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.contract import (
    DEFAULT_CONTRACT,
    GATES,
    Contract,
    ContractError,
    ToolRule,
    load_contract,
    load_for,
    normalize_path,
)
from core.settings import Settings

# A small valid contract; each broken-contract test edits one line of it.
BASE = """\
version: "1"
mode: strict
test_dir: tests
locked: ["tests/**"]
first: A
phases:
  A:
    role: architect
    tools:
      read_file: {paths: ["**"]}
    artifact:
      type: object
      properties:
        summary:
          type: string
    gate: plan_valid
    next: B
    on_fail: A
    max_rounds: 3
  B:
    role: system
    tools: {}
    artifact: {type: object}
    gate: signed
    next: null
    on_fail: B
    max_rounds: 1
"""

VALID_PLAN = {
    "summary": "A hello API.",
    "acceptance_criteria": [{"id": "AC1", "text": "GET /health answers 200"}],
    "files": [{"path": "app.py", "purpose": "the service"}],
    "entrypoint": "app.py",
    "health_path": "/health",
    "dependencies": ["flask>=3,<4"],
    "test_command": None,
    "secrets": ["API_TOKEN"],
}


@pytest.fixture(scope="module")
def contract() -> Contract:
    return load_contract(gates=GATES)


def line_of(text: str, needle: str, after: str = "") -> int:
    """1-based line of the first line containing ``needle`` (after the line containing ``after``, if given)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i, line in enumerate(lines) if i >= start and needle in line) + 1


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "contract.yaml"
    path.write_text(text)
    return path


def edited(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def assert_error(tmp_path: Path, text: str, line: int, *words: str, gates: tuple[str, ...] = ()) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ContractError) as caught:
        load_contract(path, gates=gates)
    err = caught.value
    assert (err.file, err.line) == (path, line), str(err)
    assert str(err).startswith(f"{path}:{line}: ")
    for word in words:
        assert word in str(err)


# --- the built-in contract ---------------------------------------------------------------------------------------


def test_builtin_contract_loads_in_order(contract: Contract) -> None:
    assert list(contract.phases) == ["PLAN", "TDD", "IMPL", "REVIEW", "COMPLETE"]
    assert contract.first == "PLAN"
    assert contract.version == "1" and contract.mode == "strict" and contract.test_dir == "tests"
    assert contract.digest == hashlib.sha256(DEFAULT_CONTRACT.read_bytes()).hexdigest()
    assert [p.next for p in contract.phases.values()] == ["TDD", "IMPL", "REVIEW", "COMPLETE", None]
    assert contract.phase("REVIEW").on_fail == "IMPL"
    assert [p.gate for p in contract.phases.values()] == list(GATES)


def test_the_base_of_these_tests_is_valid(tmp_path: Path) -> None:
    assert list(load_contract(write(tmp_path, BASE), gates=GATES).phases) == ["A", "B"]


def test_unknown_phase_is_a_clear_key_error(contract: Contract) -> None:
    with pytest.raises(KeyError, match="no phase 'DEPLOY'.*PLAN, TDD, IMPL, REVIEW, COMPLETE"):
        contract.phase("DEPLOY")


def test_with_mode_overrides_the_mode(contract: Contract) -> None:
    assert contract.with_mode("permissive").mode == "permissive"
    assert contract.with_mode("permissive").phases == contract.phases
    assert contract.with_mode(None) is contract
    assert contract.mode == "strict"
    with pytest.raises(ValueError, match="strict, permissive"):
        contract.with_mode("lax")


def test_load_for_applies_settings(settings: Settings, tmp_path: Path) -> None:
    assert list(load_for(settings).phases)[0] == "PLAN"
    own = write(tmp_path, BASE)
    chosen = load_for(settings.model_copy(update={"contract_path": own, "contract_mode": "permissive"}))
    assert (chosen.path, chosen.mode, chosen.first) == (own, "permissive", "A")
    with pytest.raises(ContractError, match="missing.yaml"):
        load_for(settings.model_copy(update={"contract_path": tmp_path / "missing.yaml"}))


# --- broken contracts: the error names the line ------------------------------------------------------------------


def test_yaml_syntax_error(tmp_path: Path) -> None:
    text = edited("mode: strict", "mode: strict: yes")
    assert_error(tmp_path, text, line_of(text, "mode: strict: yes"), "YAML syntax error")


def test_missing_key_names_the_phase_mapping(tmp_path: Path) -> None:
    text = edited("    gate: signed\n", "")
    assert_error(tmp_path, text, line_of(text, "  B:"), "phases.B", "'gate' is a required property")


def test_next_names_no_phase(tmp_path: Path) -> None:
    text = edited("next: B", "next: NOPE")
    assert_error(tmp_path, text, line_of(text, "next: NOPE"), "phases.A.next", "'NOPE' is not a phase", "A, B")


def test_on_fail_names_no_phase(tmp_path: Path) -> None:
    text = edited("on_fail: B", "on_fail: NOPE")
    assert_error(tmp_path, text, line_of(text, "on_fail: NOPE"), "phases.B.on_fail")


def test_first_names_no_phase(tmp_path: Path) -> None:
    text = edited("first: A", "first: Z")
    assert_error(tmp_path, text, line_of(text, "first: Z"), "'Z' is not a phase")


def test_unknown_tool(tmp_path: Path) -> None:
    text = edited('      read_file: {paths: ["**"]}\n', '      read_file: {paths: ["**"]}\n      delete_file: {}\n')
    assert_error(tmp_path, text, line_of(text, "delete_file"), "unknown tool 'delete_file'", "write_file")


def test_finish_is_implicit_and_not_listed(tmp_path: Path) -> None:
    text = edited("    tools: {}", "    tools: {finish: {}}")
    assert_error(tmp_path, text, line_of(text, "finish"), "always allowed")


def test_path_tool_needs_paths(tmp_path: Path) -> None:
    text = edited('read_file: {paths: ["**"]}', "read_file: {}")
    assert_error(tmp_path, text, line_of(text, "read_file: {}"), "needs paths")


def test_bad_artifact_schema(tmp_path: Path) -> None:
    text = edited("          type: string", "          type: 12")
    assert_error(tmp_path, text, line_of(text, "type: 12"), "phases.A.artifact.properties.summary.type", "JSON Schema")


def test_artifact_must_be_an_object_schema(tmp_path: Path) -> None:
    text = edited("    artifact: {type: object}", "    artifact: {type: string}")
    assert_error(tmp_path, text, line_of(text, "artifact: {type: string}"), "phases.B.artifact.type")


def test_max_rounds_zero(tmp_path: Path) -> None:
    text = edited("max_rounds: 1", "max_rounds: 0")
    assert_error(tmp_path, text, line_of(text, "max_rounds: 0"), "phases.B.max_rounds", "minimum of 1")


def test_unknown_key_names_its_own_line(tmp_path: Path) -> None:
    text = edited("    max_rounds: 1\n", "    max_rounds: 1\n    retries: 2\n")
    assert_error(tmp_path, text, line_of(text, "retries: 2"), "'retries' was unexpected")


def test_cycle(tmp_path: Path) -> None:
    text = edited("next: null", "next: A")
    assert_error(tmp_path, text, line_of(text, "next: A"), "cycle (A -> B -> A)")


def test_unknown_gate_when_gates_are_given(tmp_path: Path) -> None:
    text = edited("gate: plan_valid", "gate: looks_fine")
    assert_error(tmp_path, text, line_of(text, "gate: looks_fine"), "unknown gate 'looks_fine'", gates=GATES)
    assert load_contract(write(tmp_path, text)).phase("A").gate == "looks_fine"  # no gates given: not checked


def test_bad_patterns(tmp_path: Path) -> None:
    text = edited('locked: ["tests/**"]', 'locked:\n  - "tests/**"\n  - "[z-a]"')
    assert_error(tmp_path, text, line_of(text, "[z-a]"), "locked[1]", "bad pattern")
    text = edited('read_file: {paths: ["**"]}', 'read_file: {paths: ["!tests/**"]}')
    assert_error(tmp_path, text, line_of(text, "!tests"), "negation")


def test_test_dir_must_be_inside_the_project(tmp_path: Path) -> None:
    text = edited("test_dir: tests", "test_dir: ../tests")
    assert_error(tmp_path, text, line_of(text, "test_dir"), "'..' is not allowed")


def test_several_problems_are_all_listed_first_line_first(tmp_path: Path) -> None:
    text = edited("max_rounds: 3", "max_rounds: 0", edited("mode: strict", "mode: lax"))
    path = write(tmp_path, text)
    with pytest.raises(ContractError) as caught:
        load_contract(path)
    assert caught.value.line == line_of(text, "mode: lax")
    assert f"{path}:{line_of(text, 'max_rounds: 0')}: phases.A.max_rounds" in str(caught.value)


def test_empty_file(tmp_path: Path) -> None:
    assert_error(tmp_path, "", 1, "is not of type 'object'")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ContractError, match="nope.yaml:0: cannot read the contract"):
        load_contract(path)


# --- paths and tool calls ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "norm"), [("./app.py", "app.py"), ("a//b", "a/b"), ("tests/./x.py", "tests/x.py"), ("src/", "src")]
)
def test_normalize_path(path: str, norm: str) -> None:
    assert normalize_path(path) == norm


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "names no file"),
        (".", "names no file"),
        ("/etc/passwd", "absolute"),
        ("../x", "'..' is not allowed"),
        ("a/../../x", "'..' is not allowed"),
        (".git/config", ".git"),
        ("sub/.GIT/HEAD", ".git"),
        ("a\\b", "backslash"),
        ("a\0b", "NUL"),
    ],
)
def test_normalize_path_refuses(path: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_path(path)


@pytest.mark.parametrize(
    ("phase", "tool"),
    [("PLAN", "write_file"), ("PLAN", "run_tests"), ("REVIEW", "write_file"), ("COMPLETE", "read_file")],
)
def test_each_phase_refuses_unlisted_tools(contract: Contract, phase: str, tool: str) -> None:
    reason = contract.phase(phase).check_tool(tool, {"path": "app.py"})
    allowed = ", ".join([*contract.phase(phase).tools, "finish"])
    assert reason == f"tool {tool!r} is not allowed in {phase}; the tools allowed here are: {allowed}"


def test_unknown_tool_is_refused_everywhere(contract: Contract) -> None:
    for phase in contract.phases.values():
        assert phase.check_tool("shell", {}) is not None
        assert phase.check_tool("finish", {"anything": 1}) is None


def test_tdd_writes_only_tests(contract: Contract) -> None:
    tdd = contract.phase("TDD")
    assert tdd.check_tool("write_file", {"path": "tests/test_app.py", "content": ""}) is None
    assert tdd.check_tool("write_file", {"path": "tests/sub/test_x.py", "content": ""}) is None
    reason = tdd.check_tool("write_file", {"path": "app.py", "content": ""})
    assert reason == "write_file may not touch app.py in TDD: it matches none of the allowed patterns ('tests/**')"
    assert tdd.check_tool("write_file", {"path": "sub/tests/x.py"}) is not None  # tests/** is anchored at the root
    assert tdd.check_tool("run_tests", {}) is None


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("tests/test_app.py", "tests/**"),
        ("conftest.py", "conftest.py"),
        # .gitignore semantics: a pattern without '/' matches the name in every folder.
        ("sub/conftest.py", "conftest.py"),
        ("pytest.ini", "pytest.ini"),
        ("./tox.ini", "tox.ini"),
    ],
)
def test_impl_may_not_touch_locked_files(contract: Contract, path: str, pattern: str) -> None:
    reason = contract.phase("IMPL").check_tool("write_file", {"path": path, "content": "x"})
    assert reason is not None
    assert reason.startswith(f"write_file may not touch {normalize_path(path)} in IMPL: ")
    assert f"it matches the denied pattern {pattern!r} (" in reason and "locked once TDD ends" in reason


@pytest.mark.parametrize("path", ["app.py", "requirements.txt", "./app.py", "pkg/models.py", "test_app.py"])
def test_impl_may_write_code(contract: Contract, path: str) -> None:
    assert contract.phase("IMPL").check_tool("write_file", {"path": path, "content": "x"}) is None


@pytest.mark.parametrize(
    ("path", "words"),
    [("../x", "'..'"), ("/etc/passwd", "absolute"), (".git/config", ".git"), ("a\\b", "backslash")],
)
def test_bad_paths_are_refused_with_reasons(contract: Contract, path: str, words: str) -> None:
    for phase in ("PLAN", "IMPL"):
        reason = contract.phase(phase).check_tool("read_file", {"path": path})
        assert reason is not None and reason.startswith(f"read_file refused in {phase}: ") and words in reason


def test_a_path_tool_needs_a_path(contract: Contract) -> None:
    assert "needs a 'path'" in (contract.phase("PLAN").check_tool("read_file", {}) or "")
    assert "needs a 'path'" in (contract.phase("PLAN").check_tool("read_file", {"path": 3}) or "")


def test_tool_rule_without_phase_name() -> None:
    rule = ToolRule("write_file", ("**",), ("/conftest.py",))
    assert rule.check_path("sub/conftest.py") is None  # a leading '/' anchors the pattern to the root
    assert (
        rule.check_path("conftest.py")
        == "write_file may not touch conftest.py: it matches the denied pattern '/conftest.py'"
    )


def test_is_locked(contract: Contract) -> None:
    assert contract.is_locked("tests/test_app.py") and contract.is_locked("./conftest.py")
    assert contract.is_locked("a/b/conftest.py") and contract.is_locked("setup.cfg")
    assert not contract.is_locked("app.py") and not contract.is_locked("test_app.py")


# --- artifacts and tool specs ------------------------------------------------------------------------------------


def test_valid_plan_passes(contract: Contract) -> None:
    assert contract.phase("PLAN").check_artifact(VALID_PLAN) == []
    minimal = {k: VALID_PLAN[k] for k in ("summary", "acceptance_criteria", "files", "entrypoint", "health_path")}
    assert contract.phase("PLAN").check_artifact(minimal) == []


def test_plan_errors_have_paths(contract: Contract) -> None:
    plan = contract.phase("PLAN")
    assert plan.check_artifact({**VALID_PLAN, "acceptance_criteria": []}) == [
        "acceptance_criteria: [] should be non-empty"
    ]
    bad_id = {**VALID_PLAN, "acceptance_criteria": [{"id": "X1", "text": "GET /health answers 200"}]}
    assert plan.check_artifact(bad_id) == ["acceptance_criteria[0].id: 'X1' does not match '^AC[0-9]+$'"]
    errors = plan.check_artifact({**VALID_PLAN, "entrypoint": "app.js", "secrets": ["api-token"], "extra": 1})
    assert errors == [
        "(root): Additional properties are not allowed ('extra' was unexpected)",
        "entrypoint: 'app.js' does not match '\\\\.py$'",
        "secrets[0]: 'api-token' does not match '^[A-Z_][A-Z0-9_]*$'",
    ]


def test_other_artifacts(contract: Contract) -> None:
    review = contract.phase("REVIEW")
    assert review.check_artifact({"verdict": "approve", "blocking_issues": []}) == []
    assert review.check_artifact({"verdict": "lgtm", "blocking_issues": []}) == [
        "verdict: 'lgtm' is not one of ['approve', 'changes_requested']"
    ]
    tdd = contract.phase("TDD")
    assert tdd.check_artifact({"covers": {"AC1": ["tests/test_app.py::test_health"]}, "message": "tests"}) == []
    assert tdd.check_artifact({"covers": {"AC1": []}, "message": "tests"}) == ["covers.AC1: [] should be non-empty"]
    assert tdd.check_artifact({"covers": {"health": ["t"]}, "message": "m"}) == [
        "covers: 'health' does not match '^AC[0-9]+$'"
    ]
    assert contract.phase("IMPL").check_artifact({}) == ["(root): 'message' is a required property"]


def test_tool_specs(contract: Contract) -> None:
    for phase in contract.phases.values():
        specs = phase.tool_specs()
        names = [s["function"]["name"] for s in specs]
        assert names == [*phase.tools, "finish"]
        assert all(s["type"] == "function" for s in specs)
        assert specs[-1]["function"]["parameters"] == {k: v for k, v in phase.artifact.items() if k != "examples"}
    write_file = contract.phase("IMPL").tool_specs()[2]["function"]
    assert write_file["name"] == "write_file"
    assert set(write_file["parameters"]["properties"]) == {"path", "content"}
    assert "tests/**" in write_file["description"] and "conftest.py" in write_file["description"]
    assert "tests/**" in contract.phase("TDD").tool_specs()[2]["function"]["description"]


def test_tool_specs_are_copies(contract: Contract) -> None:
    spec = contract.phase("PLAN").tool_specs()[-1]["function"]["parameters"]
    spec["required"].append("mutated")
    assert "mutated" not in contract.phase("PLAN").artifact["required"]


def test_the_signing_gate_belongs_to_the_system_phase_only(tmp_path: Path) -> None:
    text = DEFAULT_CONTRACT.read_text()
    at = text.index("gate: review_clean")
    broken = tmp_path / "c.yaml"
    broken.write_text(text[:at] + "gate: signed" + text[at + len("gate: review_clean") :])
    line = text[:at].count("\n") + 1
    with pytest.raises(ContractError, match=rf"c\.yaml:{line}: .*'signed' gate is the system's phase"):
        load_contract(broken, gates=GATES)


def test_every_gate_the_contract_may_name_has_its_code() -> None:
    from nodes.gates import GATES as CODED

    assert set(GATES) == {*CODED, "signed"}  # "signed" is the system phase's own step (nodes/engineering.py)


def test_each_model_phase_shows_an_example_that_fits_its_schema(contract: Contract) -> None:
    for name in ("PLAN", "TDD", "IMPL", "REVIEW"):
        example = contract.phase(name).example()
        assert example is not None and contract.phase(name).check_artifact(example) == []
    assert contract.phase("COMPLETE").example() is None


def test_an_example_that_does_not_fit_its_schema_stops_the_load_at_its_line(tmp_path: Path) -> None:
    text = DEFAULT_CONTRACT.read_text()
    at = text.index("- message: Serve /health and /hello")
    broken = tmp_path / "c.yaml"
    broken.write_text(text[:at] + "- message: ''" + text[at + len("- message: Serve /health and /hello") :])
    line = text[:at].count("\n") + 1
    with pytest.raises(ContractError, match=rf"c\.yaml:{line}: .*examples\[0\]: the example does not fit its schema"):
        load_contract(broken, gates=GATES)

"""`gradcheck gate` as a CI runs it: config errors, exit codes, JUnit / JSON / markdown, baselines."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from gradcheck import Check, Report
from gradcheck.cli import main
from gradcheck.gate import (
    GateCheck,
    GateConfig,
    GateResult,
    KernelEntry,
    gate_json,
    junit_xml,
    load_config,
    markdown,
)

ROOT = Path(__file__).resolve().parents[2]
CE = ROOT / "kernels_cuda/loss_ce/ce_grad.cu"
SIGN = ROOT / "kernels_cuda/loss_ce/bugs/sign_flipped.cu"
SHAPE = "shapes = [{ rows = 4, vocab = 50 }]"


@dataclass
class Run:
    code: int
    out: str
    err: str
    dir: Path

    def read(self, name: str) -> str:
        return (self.dir / name).read_text()


def gate(tmp: Path, config: str, *args: str) -> Run:
    """Write pyproject.toml in ``tmp`` and run `gradcheck gate ARGS` there."""
    (tmp / "pyproject.toml").write_text(config)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(tmp), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["gate", *args])
    return Run(code, out.getvalue(), err.getvalue(), tmp)


def kernel(name: str, source: Path | str, shapes: str = SHAPE, **extra: str) -> str:
    lines = ["[[tool.gradcheck.kernels]]", f'name = "{name}"', 'op = "loss-ce"']
    if isinstance(source, Path):
        lines.append(f'source = "{source}"')
    else:
        lines.append(f'kernel = "{source}"')
    lines += [shapes, *(f"{k} = {v}" for k, v in extra.items())]
    return "\n".join(lines) + "\n"


HEAD = '[project]\nname = "mine"\n\n[tool.gradcheck]\nbackend = "cpu"\n\n'
REPORTS = ("--junit", "gate.xml", "--json", "gate.json", "--markdown", "gate.md")


# ---------------------------------------------------------------------------------------------
# JUnit XML: the rules of Jenkins' junit-10.xsd (which GitLab, GitHub test reporters and Azure
# read), plus the counts agreeing with the testcases, so a malformed file fails the test.

SUITES_ATTRS = {"name", "time", "tests", "failures", "disabled", "errors", "skipped"}
SUITE_ATTRS = SUITES_ATTRS | {"timestamp", "hostname", "id", "package", "file", "log", "url"}
CASE_ATTRS = {"name", "classname", "time", "assertions", "status", "file", "line"}
COUNTS = ("tests", "failures", "errors", "skipped")
DECIMAL = re.compile(r"\d+(\.\d+)?")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")  # xs:dateTime without a zone (Ant)


def _ints(el: ET.Element, where: str) -> dict[str, int]:
    out = {}
    for key in COUNTS:
        value = el.get(key)
        assert value is not None and value.isdigit(), f"{where}: {key}={value!r}"
        out[key] = int(value)
    assert DECIMAL.fullmatch(el.get("time", "")), f"{where}: time={el.get('time')!r}"
    return out


def _in_order(children: list[str], order: list[str], where: str) -> None:
    ranks = [order.index(t) if t in order else -1 for t in children]
    assert -1 not in ranks, f"{where}: unexpected element in {children}"
    assert ranks == sorted(ranks), f"{where}: elements out of order: {children}"


def validate_junit(text: str) -> ET.Element:
    """Parse a JUnit file and check it against the schema's rules; AssertionError if malformed."""
    root = ET.fromstring(text)
    assert root.tag == "testsuites", root.tag
    assert set(root.attrib) <= SUITES_ATTRS, set(root.attrib) - SUITES_ATTRS
    totals = _ints(root, "testsuites")
    sums = dict.fromkeys(COUNTS, 0)
    for suite in root:
        where = f"testsuite {suite.get('name')!r}"
        assert suite.tag == "testsuite", suite.tag
        assert suite.get("name"), "testsuite without a name"
        assert set(suite.attrib) <= SUITE_ATTRS, set(suite.attrib) - SUITE_ATTRS
        assert TIMESTAMP.fullmatch(suite.get("timestamp", "")), suite.get("timestamp")
        counts = _ints(suite, where)
        _in_order(
            [c.tag for c in suite], ["properties", "testcase", "system-out", "system-err"], where
        )
        assert len(suite.findall("properties")) <= 1, where
        for prop in suite.iterfind("properties/*"):
            assert prop.tag == "property" and set(prop.attrib) == {"name", "value"}, prop.attrib
        cases = suite.findall("testcase")
        names = [c.get("name") for c in cases]
        assert len(set(names)) == len(names), f"{where}: duplicate testcase names {names}"
        seen = dict.fromkeys(COUNTS, 0)
        seen["tests"] = len(cases)
        for case in cases:
            cwhere = f"testcase {case.get('name')!r}"
            assert case.get("name"), f"{where}: a testcase without a name"
            assert set(case.attrib) <= CASE_ATTRS, set(case.attrib) - CASE_ATTRS
            assert DECIMAL.fullmatch(case.get("time", "")), f"{cwhere}: time"
            tags = [c.tag for c in case]
            _in_order(tags, ["skipped", "error", "failure", "system-out", "system-err"], cwhere)
            assert tags.count("skipped") <= 1, cwhere
            for el in case:
                assert len(el) == 0, f"{cwhere}: <{el.tag}> holds elements"
                if el.tag in ("failure", "error"):
                    assert set(el.attrib) <= {"message", "type"}, el.attrib
            seen["failures"] += "failure" in tags
            seen["errors"] += "error" in tags
            seen["skipped"] += "skipped" in tags
        assert counts == seen, f"{where}: attributes say {counts}, testcases {seen}"
        for key in COUNTS:
            sums[key] += counts[key]
    assert totals == sums, f"testsuites: attributes say {totals}, suites {sums}"
    return root


# ---------------------------------------------------------------------------------------------
# One gate run shared by the tests that read its output: a correct kernel and a catalogue bug.


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Run:
    config = (
        HEAD
        + kernel("ce-grad", CE, function='"ce_grad"')
        + kernel("sign-flipped", SIGN, shapes="sweep = { rows = [4], vocab = [50] }")
    )
    return gate(tmp_path_factory.mktemp("gate"), config, *REPORTS)


def test_kernel_bug_exits_1_after_writing_every_report(first: Run) -> None:
    assert first.code == 1
    assert {p.name for p in first.dir.iterdir()} == {
        "pyproject.toml",
        "gate.xml",
        "gate.json",
        "gate.md",
    }  # written, and no FILE.tmp left behind


def test_console_table_findings_and_overall_line(first: Run) -> None:
    assert "gradcheck gate: 2 checks from" in first.err
    assert "[1/2] ce-grad[rows=4,vocab=50]: pass (" in first.err
    assert "[2/2] sign-flipped[rows=4,vocab=50]: kernel-bug (" in first.err
    assert re.search(r"ce-grad\s+loss-ce\s+rows=4, vocab=50\s+pass\s+[\d.]+ s", first.out)
    assert re.search(r"sign-flipped\s+loss-ce\s+rows=4, vocab=50\s+kernel-bug", first.out)
    assert "sign-flipped[rows=4,vocab=50]: kernel-bug" in first.out
    assert "where: every element; sign flipped: kernel = -reference" in first.out
    assert (
        f"reproduce the whole check: gradcheck run loss-ce --rows 4 --vocab 50 --block 256 "
        f"--seed 0 --source {SIGN} --function ce_grad_sign_flipped --backend cpu\n" in first.out
    )
    assert (
        "gate: fail  1 pass, 1 kernel-bug (2 checks of 2 kernels, cpu backend, seed 0" in first.out
    )
    assert "reports written to gate.xml, gate.json, gate.md" in first.out


def test_junit_has_a_suite_per_kernel_and_a_failure_with_the_findings(first: Run) -> None:
    root = validate_junit(first.read("gate.xml"))
    assert root.attrib["tests"] == "2" and root.attrib["failures"] == "1"
    assert root.attrib["errors"] == "0"
    assert [s.get("name") for s in root] == ["ce-grad", "sign-flipped"]
    good, bad = root.iter("testcase")
    assert good.attrib["name"] == "ce-grad[rows=4,vocab=50]"
    assert good.attrib["classname"] == "gradcheck.loss-ce.ce-grad"
    assert float(good.attrib["time"]) > 0 and len(good) == 0
    assert bad.attrib["classname"] == "gradcheck.loss-ce.sign-flipped"
    (failure,) = bad
    assert failure.tag == "failure" and failure.attrib["type"] == "kernel-bug"
    assert failure.attrib["message"].startswith(
        "kernel-bug: loss-ce [plain] compare grad (rows=4, vocab=50, block=256, cpu backend): "
        "200 of 200 elements of grad beyond the noise bound"
    )
    text = failure.text or ""
    assert "  where: every element; sign flipped: kernel = -reference" in text
    assert "--case plain" in text  # each finding's own reproduce line
    assert text.splitlines()[-1] == (
        f"reproduce: gradcheck run loss-ce --rows 4 --vocab 50 --block 256 --seed 0 "
        f"--source {SIGN} --function ce_grad_sign_flipped --backend cpu"
    )
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["op"] == "loss-ce" and props["backend"] == "cpu"


def test_json_holds_every_check_and_its_full_report(first: Run) -> None:
    data = json.loads(first.read("gate.json"))
    assert data["schema"] == "gradcheck.gate" and data["schema_version"] == 1
    assert data["config"] == str(first.dir.resolve() / "pyproject.toml")
    assert data["result"] == "fail" and data["exit_code"] == 1
    assert data["counts"] == {
        "pass": 1,
        "fd-noise": 0,
        "kernel-bug": 1,
        "inconclusive": 0,
        "error": 0,
    }
    assert data["baseline"] is None
    good, bad = data["checks"]
    assert (good["id"], good["kernel"], good["op"]) == (
        "ce-grad[rows=4,vocab=50]",
        "ce-grad",
        "loss-ce",
    )
    assert good["shape"] == {"rows": 4, "vocab": 50} and good["verdict"] == "pass"
    assert good["error"] is None
    assert good["report"]["schema"] == "gradcheck.report" and good["report"]["verdict"] == "pass"
    assert bad["verdict"] == "kernel-bug" == bad["report"]["verdict"]
    assert bad["reproduce"] == bad["report"]["reproduce"]
    assert any(c["verdict"] == "kernel-bug" for c in bad["report"]["checks"])


def test_markdown_table_then_failures_with_reproduce(first: Run) -> None:
    md = first.read("gate.md")
    assert md.startswith("## gradcheck gate: fail\n")
    assert "| kernel | op | shape | verdict | time |\n|---|---|---|---|---|\n" in md
    assert re.search(r"\| ce-grad \| loss-ce \| rows=4, vocab=50 \| pass \| [\d.]+ s \|", md)
    assert "| sign-flipped | loss-ce | rows=4, vocab=50 | **kernel-bug** |" in md
    failures = md.split("### Failures\n", 1)[1]
    assert "#### `sign-flipped[rows=4,vocab=50]`: kernel-bug" in failures
    assert (
        "```text\nkernel-bug: loss-ce [plain] compare grad (rows=4, vocab=50, block=256, "
        "cpu backend)\n  200 of 200 elements of grad beyond the noise bound" in failures
    )
    assert (
        f"reproduce:\n\n```sh\ngradcheck run loss-ce --rows 4 --vocab 50 --block 256 --seed 0 "
        f"--source {SIGN} --function ce_grad_sign_flipped --backend cpu\n```" in failures
    )
    assert "ce-grad[" not in failures  # a passing check has no failure section
    assert "What changed" not in md


def test_baseline_shows_what_got_worse_new_removed_and_better(first: Run, tmp_path: Path) -> None:
    baseline = json.loads(first.read("gate.json"))
    gone = dict(baseline["checks"][0], id="gone[rows=4,vocab=50]", kernel="gone")
    baseline["checks"].append(gone)
    (tmp_path / "base.json").write_text(json.dumps(baseline))
    config = (
        HEAD
        + kernel("ce-grad", SIGN)  # a regression: the kernel that passed now has the bug
        + kernel("sign-flipped", CE)  # the bug fixed
        + kernel("online", "online-softmax")  # a new kernel
    )
    run = gate(
        tmp_path, config, "--baseline", "base.json", "--json", "now.json", "--markdown", "now.md"
    )
    assert run.code == 1  # a baseline explains; it does not change the exit code
    assert "what changed since base.json:" in run.out
    assert "  worse: ce-grad[rows=4,vocab=50]: pass -> kernel-bug" in run.out
    assert "  new: online[rows=4,vocab=50]: pass" in run.out
    assert "  removed: gone[rows=4,vocab=50]: was pass" in run.out
    assert "  better: sign-flipped[rows=4,vocab=50]: kernel-bug -> pass" in run.out
    md = run.read("now.md")
    assert "| ce-grad | loss-ce | rows=4, vocab=50 | **kernel-bug** |" in md
    assert re.search(r"\| online \| loss-ce \| rows=4, vocab=50 \| pass \| [\d.]+ s \| new \|", md)
    changed = md.split("### What changed since the baseline (`base.json`)\n", 1)[1]
    changed = changed.split("### Failures", 1)[0]
    assert changed.index("**Got worse**") < changed.index("**Got better**")
    assert "- `ce-grad[rows=4,vocab=50]`: pass -> kernel-bug" in changed
    assert "**New**\n\n- `online[rows=4,vocab=50]`: pass" in changed
    assert "**Removed**\n\n- `gone[rows=4,vocab=50]`: was pass" in changed
    assert "- `sign-flipped[rows=4,vocab=50]`: kernel-bug -> pass" in changed
    diff = json.loads(run.read("now.json"))["baseline"]
    assert diff["path"] == "base.json"
    assert [c["id"] for c in diff["worse"]] == ["ce-grad[rows=4,vocab=50]"]
    assert diff["worse"][0]["before"] == "pass" and diff["worse"][0]["after"] == "kernel-bug"
    assert [c["id"] for c in diff["better"]] == ["sign-flipped[rows=4,vocab=50]"]
    assert [c["id"] for c in diff["new"]] == ["online[rows=4,vocab=50]"]
    assert [(c["id"], c["after"]) for c in diff["removed"]] == [("gone[rows=4,vocab=50]", None)]


def test_a_kernel_that_does_not_build_is_an_error_for_each_shape_and_exits_3(
    tmp_path: Path,
) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "k/bad.cu").write_text('extern "C" __global__ void k(const float* l) { nope; }\n')
    config = (
        HEAD
        + kernel("bad", Path("k/bad.cu"), shapes="sweep = { rows = 4, vocab = [50, 60] }")
        + kernel("ce-grad", CE)
    )
    run = gate(tmp_path, config, *REPORTS)
    assert run.code == 3
    assert "[1/3] bad[rows=4,vocab=50]: error (" in run.err
    assert "[3/3] ce-grad[rows=4,vocab=50]: pass (" in run.err  # the other kernels still run
    assert "bad[rows=4,vocab=50]: error (CompileError)" in run.out
    assert "k/bad.cu:1" in run.out
    assert "bad[rows=4,vocab=60]: error (CompileError, as bad[rows=4,vocab=50])" in run.out
    assert "reproduce: gradcheck run loss-ce --rows 4 --vocab 60 --block 256 --seed 0 " in run.out
    assert "gate: error  1 pass, 2 error" in run.out
    root = validate_junit(run.read("gate.xml"))
    assert root.attrib["errors"] == "2" and root.attrib["failures"] == "0"
    errors = list(root.iter("error"))
    assert [e.get("type") for e in errors] == ["CompileError", "CompileError"]
    assert all("k/bad.cu:1" in (e.get("message") or "") for e in errors)
    assert (errors[1].text or "").splitlines()[-1] == (
        "reproduce: gradcheck run loss-ce --rows 4 --vocab 60 --block 256 --seed 0 "
        "--source k/bad.cu --function k --backend cpu"
    )
    data = json.loads(run.read("gate.json"))
    assert data["result"] == "error" and data["exit_code"] == 3
    check = data["checks"][0]
    assert check["verdict"] == "error" and check["report"] is None
    assert check["error"]["type"] == "CompileError" and "nope" in check["error"]["message"]
    md = run.read("gate.md")
    assert (
        "#### `bad[rows=4,vocab=50]`: error" in md
        and "| bad | loss-ce | rows=4, vocab=60 | **error** |" in md
    )


# ---------------------------------------------------------------------------------------------
# Mistakes in the config: exit 2 before anything runs, naming the key and the value.

GOOD = kernel("ce-grad", CE)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            HEAD + GOOD.replace('"loss-ce"', '"loss-cee"'),
            "unknown op 'loss-cee'. Did you mean 'loss-ce'?",
        ),
        (HEAD + GOOD.replace("shapes =", "shape ="), "unknown key 'shape'. Did you mean 'shapes'?"),
        (
            HEAD.replace('backend = "cpu"', 'kernel = "x"'),
            "[tool.gradcheck]: unknown key 'kernel'. Did you mean 'kernels'?",
        ),
        (HEAD.replace('"cpu"', '"gpu"'), "backend = 'gpu' is not a backend."),
        (HEAD, "no kernels to check: add a [[tool.gradcheck.kernels]] table"),
        (
            HEAD + kernel("ce", Path("kernels/missing.cu")),
            "source = 'kernels/missing.cu': no such file",
        ),
        (
            HEAD + kernel("ce", CE, shapes="sweep = { rows = [4], vocab = [] }"),
            "sweep.vocab = [] is an empty sweep: it gives no checks.",
        ),
        (HEAD + kernel("ce", CE, shapes="sweep = {}"), "sweep = {} gives no checks"),
        (HEAD + kernel("ce", CE, shapes="shapes = []"), "shapes = [] gives no checks"),
        (HEAD + GOOD + GOOD, "#2 ('ce-grad'): name = 'ce-grad' is also the name of kernel #1"),
        (
            HEAD + kernel("ce", CE, shapes="shapes = [{ rows = 4, vocabb = 50 }]"),
            "shapes[0] = { rows = 4, vocabb = 50 }: loss-ce has no dimension or option 'vocabb'. "
            "Did you mean 'vocab'?",
        ),
        (
            HEAD + kernel("ce", CE, shapes="sweep = { hidden = [64] }"),
            "sweep { hidden = 64 }: loss-ce has no dimension or option 'hidden'.",
        ),
        (HEAD + kernel("ce", CE, shapes="shapes = [{ vocab = 0 }]"), "vocab=0 must be at least 1"),
        (HEAD + kernel("ce", "online-sofmax"), "Did you mean 'online-softmax'?"),
        (HEAD + kernel("ce", CE, kernel='"ce-grad"'), "give either source = "),
        (HEAD + kernel("c e", CE), "name = 'c e': use letters, digits"),
        (
            HEAD + kernel("ce", CE, block="2048"),
            "block = 2048 must be a whole number from 1 to 1024",
        ),
        (HEAD + kernel("ce", CE, defines="'N=4'"), "defines = 'N=4' must be a list of strings"),
        (HEAD + "[[tool.gradcheck.kernels]\n", "not valid TOML"),
    ],
)
def test_config_mistakes_exit_2_naming_the_key(config: str, message: str, tmp_path: Path) -> None:
    run = gate(tmp_path, config, *REPORTS)
    assert run.code == 2
    assert message in run.err, run.err
    assert "UsageError" in run.err and str(tmp_path / "pyproject.toml") in run.err
    assert not (tmp_path / "gate.xml").exists()  # nothing ran, nothing to report


def test_a_source_with_two_kernels_needs_function(tmp_path: Path) -> None:
    two = tmp_path / "two.cu"
    two.write_text(
        'extern "C" __global__ void a(float* x) {}\nextern "C" __global__ void b(float* x) {}\n'
    )
    run = gate(tmp_path, HEAD + kernel("two", Path("two.cu")))
    assert run.code == 2
    assert (
        "source = 'two.cu' defines 2 kernels (a, b): name the one to check with function" in run.err
    )


def test_no_config_table_or_file_exits_2(tmp_path: Path) -> None:
    run = gate(tmp_path, '[project]\nname = "mine"\n')
    assert run.code == 2
    assert "pyproject.toml has no [tool.gradcheck] table" in run.err
    assert "[[tool.gradcheck.kernels]]" in run.err  # with an example to copy
    with contextlib.chdir(tmp_path), contextlib.redirect_stderr(io.StringIO()) as err:
        assert main(["gate", "--config", "nope.toml"]) == 2
    assert "--config nope.toml: no such file." in err.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--junit", "no/such/dir/gate.xml"],
            "--junit no/such/dir/gate.xml: the directory no/such/dir does not exist.",
        ),
        (["--baseline", "missing.json"], "--baseline missing.json: no such file."),
        (["--baseline", "report.json"], "schema is 'gradcheck.report', not 'gradcheck.gate'"),
    ],
)
def test_bad_output_or_baseline_exits_2(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(
        json.dumps({"schema": "gradcheck.report", "verdict": "pass"})
    )
    run = gate(tmp_path, HEAD + GOOD, *args)
    assert run.code == 2 and message in run.err, run.err


def test_config_found_in_a_parent_and_paths_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels/ce.cu").write_text(CE.read_text())
    (tmp_path / "include").mkdir()
    (tmp_path / "pyproject.toml").write_text(
        HEAD
        + kernel(
            "ce",
            Path("kernels/ce.cu"),
            shapes="sweep = { vocab = [50, 257], rows = [4, 8] }",
            include_dirs='["include"]',
            defines='["TILE=4"]',
        )
    )
    sub = tmp_path / "src" / "deep"
    sub.mkdir(parents=True)
    config = load_config(cwd=sub)
    assert config.path == (tmp_path / "pyproject.toml").resolve()
    assert config.backend == "cpu" and config.seed == 0
    (entry,) = config.kernels
    assert entry.kernel == str((tmp_path / "kernels/ce.cu").resolve())  # outside cwd: absolute
    assert entry.function == "ce_grad"  # the one kernel the source defines
    assert entry.include_dirs == (str((tmp_path / "include").resolve()),)
    assert entry.defines == ("TILE=4",)
    assert entry.shapes == (
        {"rows": 4, "vocab": 50},
        {"rows": 8, "vocab": 50},
        {"rows": 4, "vocab": 257},
        {"rows": 8, "vocab": 257},
    )
    (tmp_path / "pyproject.toml").write_text(
        HEAD
        + kernel(
            "ce",
            Path("kernels/ce.cu"),
            shapes="shapes = [{ rows = 4, vocab = 50 }, { vocab = 2000 }]\n"
            "sweep = { vocab = [50, 2000], rows = 4 }",
        )
    )
    (overlap,) = load_config(cwd=tmp_path).kernels
    assert overlap.shapes == (  # listed and swept: one check each, in the order first given
        {"rows": 4, "vocab": 50},
        {"rows": 64, "vocab": 2000},
        {"rows": 4, "vocab": 2000},
    )
    here = load_config(cwd=tmp_path)
    assert here.kernels[0].kernel == "kernels/ce.cu"  # inside cwd: as a command there types it


def test_a_config_file_with_the_table_at_top_level(tmp_path: Path) -> None:
    (tmp_path / "gate.toml").write_text(
        'seed = 3\n[[kernels]]\nname = "attn"\nop = "attention-bwd"\n'
        'kernel = "warp-per-key"\nshapes = [{ seq = 8, head_dim = 8, causal = true }]\n'
        '[[kernels]]\nname = "ln"\nop = "layernorm-bwd"\nkernel = "cg-streaming"\n'
        "shapes = [{ eps = 1e-5 }, { eps = 1e-3 }]\n"
    )
    config = load_config("gate.toml", cwd=tmp_path)
    assert config.seed == 3 and config.backend == "auto"
    attn, ln = config.kernels
    assert attn.shapes == ({"batch": 2, "heads": 4, "seq": 8, "head_dim": 8, "causal": True},)
    # options at their default are left out of the check's name; others are kept
    assert ln.shapes == ({"rows": 64, "hidden": 768}, {"rows": 64, "hidden": 768, "eps": 1e-3})


# ---------------------------------------------------------------------------------------------
# Verdicts the shipped kernels do not give at small sizes: reports built by hand.


def _result(*verdicts: str) -> GateResult:
    entry = KernelEntry(
        name="k",
        op="loss-ce",
        kernel="k.cu",
        shipped=False,
        function="k",
        block=None,
        grid=None,
        defines=(),
        include_dirs=(),
        no_extern_c=None,
        shapes=tuple({"rows": 4, "vocab": 50 + i} for i in range(len(verdicts))),
    )
    checks = []
    for shape, verdict in zip(entry.shapes, verdicts, strict=True):
        repro = f"gradcheck run loss-ce --rows 4 --vocab {shape['vocab']} --source k.cu"
        if verdict == "error":
            checks.append(
                GateCheck(
                    "k", "loss-ce", shape, "error", 0.1, repro, None, "LaunchError", "no launch"
                )
            )
            continue
        finding: list[Check] = []
        if verdict == "inconclusive":
            finding = [
                Check(
                    "compare",
                    "plain",
                    "inconclusive",
                    "no power: the bound is above the gradient",
                    output="grad",
                    reproduce=repro + " --case plain",
                )
            ]
        if verdict == "fd-noise":
            finding = [
                Check(
                    "fd32",
                    "plain",
                    "fd-noise",
                    "96 of 100 elements 'fail'",
                    reproduce=repro + " --fd32",
                )
            ]
        if verdict == "kernel-bug":
            finding = [Check("compare", "plain", "kernel-bug", "200 of 200 wrong", output="grad")]
        report = Report(
            verdict=verdict,  # type: ignore[arg-type]
            op="loss-ce",
            backend="cpu",
            backend_reason="test",
            kernel="k.cu:k",
            shapes={**shape, "block": 256},
            seed=0,
            checks=(Check("reference-fd", "plain", "pass", "agrees"), *finding),
            cases=({"name": "plain", "description": "", "dims": shape},),
            reproduce=repro,
        )
        checks.append(GateCheck("k", "loss-ce", shape, verdict, 0.5, repro, report))
    config = GateConfig(path=Path("/repo/pyproject.toml"), backend="cpu", seed=0, kernels=(entry,))
    return GateResult(config, tuple(checks), datetime(2025, 1, 2, 3, 4, 5), 1.0)


def test_inconclusive_fails_the_gate_and_fd_noise_passes() -> None:
    result = _result("pass", "fd-noise", "inconclusive")
    assert (result.result, result.exit_code) == ("fail", 1)
    root = validate_junit(junit_xml(result))
    ok, noise, weak = root.iter("testcase")
    assert len(ok) == 0
    (out,) = noise
    assert out.tag == "system-out" and (out.text or "").startswith("fd-noise: the kernel is right")
    (failure,) = weak
    assert failure.tag == "failure" and failure.attrib["type"] == "inconclusive"
    assert failure.attrib["message"] == (
        "inconclusive: loss-ce [plain] compare grad (rows=4, vocab=52, block=256, cpu backend): "
        "no power: the bound is above the gradient"
    )
    md = markdown(result)
    assert "| k | loss-ce | rows=4, vocab=52 | **inconclusive** |" in md
    assert "| k | loss-ce | rows=4, vocab=51 | fd-noise |" in md
    assert "#### `k[rows=4,vocab=52]`: inconclusive" in md and "#### `k[rows=4,vocab=51]`" not in md
    assert (_result("pass", "fd-noise").exit_code, _result("pass").result) == (0, "pass")


def test_an_error_wins_over_a_kernel_bug() -> None:
    result = _result("kernel-bug", "error")
    assert (result.result, result.exit_code) == ("error", 3)
    root = validate_junit(junit_xml(result))
    assert (root.attrib["failures"], root.attrib["errors"]) == ("1", "1")
    (error,) = root.iter("error")
    assert error.attrib == {"message": "LaunchError: no launch", "type": "LaunchError"}


def test_junit_text_is_kept_to_what_xml_can_hold() -> None:
    result = _result("error")
    bad = dataclasses.replace(result.checks[0], error_message="\x1b[31merror\x1b[0m: x")
    xml = junit_xml(GateResult(result.config, (bad,), result.started, 1.0))
    (error,) = validate_junit(xml).iter("error")
    assert error.attrib["message"] == "LaunchError: ?[31merror?[0m: x"


def _mutate(xml: str, old: str, new: str) -> str:
    assert old in xml, old
    return xml.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        (
            '<testsuites name="gradcheck gate" tests="3"',
            '<testsuites name="gradcheck gate" tests="4"',
            "testsuites",
        ),
        (
            'failures="1" errors="0" skipped="0" time="1.500" timestamp',
            'failures="0" errors="0" skipped="0" time="1.500" timestamp',
            "attributes say",
        ),
        ('time="0.500" />', 'time="0.5s" />', "time"),
        ('<testsuite name="k"', "<testsuite", "without a name"),
        ('timestamp="2025-01-02T03:04:05"', 'timestamp="yesterday"', "yesterday"),
        ("<properties>", "<bogus />\n<properties>", "unexpected element"),
        ('type="inconclusive">', 'type="inconclusive" severity="high">', "severity"),
        ("</testsuites>", "", "mismatched tag|no element found|unclosed token"),
    ],
)
def test_the_junit_check_fails_on_a_malformed_file(old: str, new: str, why: str) -> None:
    xml = junit_xml(_result("pass", "fd-noise", "inconclusive"))
    validate_junit(xml)
    with pytest.raises((AssertionError, ET.ParseError), match=why):
        validate_junit(_mutate(xml, old, new))


def test_json_schema_keys_are_the_documented_ones() -> None:
    data = json.loads(gate_json(_result("pass", "error")))
    guide = (ROOT / "DIAGNOSTIC_GUIDE.md").read_text().split('<a id="gate-schema"></a>', 1)[1]
    guide = guide.split("<a id=", 1)[0]
    for key in [*data, *data["checks"][0]]:
        assert f"`{key}`" in guide, key

"""Bad input, fuzzed (Hypothesis): malformed specs (as Python objects and as YAML files), CLI
arguments and tracking URIs. Only the project's SpecError may come out, its one-line message
names the field, the CLI exits 2 with one line on stderr, and nothing is executed or written.

Each test counts the malformed inputs it actually generated and asserts a floor, so the
"at least 2,000 malformed specs per run" promise is checked, not assumed (spec tests below:
at least 1,250 Python specs + 750 YAML files, of 1,400 + 850 drawn; the rest happen to be
valid). Examples are random per run (no example database), so
CI keeps exploring; a failure prints the reproducing seed.
"""

from __future__ import annotations

import copy
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search.cli import main
from search.errors import SpecError
from search.paths import URI_SCHEMES, check_tracking_uri, resolve_tracking_uri
from search.spec import MAX_SPEC_BYTES, SearchSpec, load_spec, parse_spec
from tests.search.conftest import BASE


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Every field of the spec, so mutations reach sections the base spec leaves at defaults.
FIELDS: list[tuple[str, ...]] = [
    ("name",),
    ("dataset",),
    ("dataset", "name"),
    ("dataset", "validation_fraction"),
    ("model",),
    ("model", "width"),
    ("space",),
    ("space", "activations"),
    ("space", "depth"),
    ("space", "depth", "low"),
    ("space", "depth", "high"),
    ("space", "initializers"),
    ("space", "lr"),
    ("space", "lr", "low"),
    ("space", "lr", "high"),
    ("space", "optimizers"),
    ("space", "momentum"),
    ("space", "batch_size"),
    ("convergence", "target_loss"),
    ("convergence", "target_accuracy"),
    ("convergence", "max_steps"),
    ("convergence", "eval_every"),
    ("convergence", "divergence_factor"),
    ("budget", "trials_per_activation"),
    ("budget", "cohort_size"),
    ("budget", "early_stopping"),
    ("sampler", "name"),
    ("sampler", "n_startup_trials"),
    ("resources", "cpus_per_trial"),
    ("resources", "gpus_per_trial"),
    ("tracking", "uri"),
    ("tracking", "experiment"),
    ("tracking", "optuna_storage"),
    ("seed",),
    ("seeds",),
    ("diagnostics", "enabled"),
    ("diagnostics", "every"),
    ("diagnostics", "probe_size"),
    ("diagnostics", "sharpness_iters"),
    ("lr_probe", "factor"),
    ("lr_probe", "points"),
    ("lr_probe", "rounds"),
]
REQUIRED = [("name",), ("dataset",), ("space",), ("space", "activations"), ("dataset", "name")]

NEAR_MISS = [
    "relu",
    "ReLU",
    "swish2",
    "tpe",
    "cmaes",
    "digits",
    "cifar10",
    "auto",
    "he",
    "adamw",
    "",
    " ",
    "NaN",
    "inf",
    "1e999",
    "-1",
    "null",
    "../../etc/passwd",
    "sqlite://",
    "ftp://x",
    "x" * 300,
    "a\nb",
    "\x00",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**31, 2**63, 10**100, -(10**100)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 5e-324]),
    st.text(max_size=20),
    st.sampled_from(NEAR_MISS),
    st.binary(max_size=12),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers()), inner, max_size=4),
    ),
    max_leaves=8,
)


def _nest(value: Any, depth: int, kind: str) -> Any:
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


@st.composite
def malformed_specs(draw: st.DrawFn) -> tuple[Any, set[str]]:
    """A spec dict with 1-3 mutations, and the top-level fields an error may name."""
    if draw(st.integers(0, 19)) == 0:  # the whole document is not a mapping
        return draw(junk.filter(lambda v: not isinstance(v, dict))), {"spec"}
    spec: dict[str, Any] = copy.deepcopy(BASE)
    named: set[str] = set()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["set", "set", "set", "drop", "extra", "deep", "huge"]))
        path = draw(st.sampled_from(REQUIRED if op == "drop" else FIELDS))
        node: Any = spec
        for part in path[:-1]:
            if not isinstance(node, dict):
                break
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            continue
        leaf = path[-1]
        named.add(path[0])
        if op == "set":
            node[leaf] = draw(junk)
        elif op == "drop":
            node.pop(leaf, None)
        elif op == "extra":
            key = draw(st.text(min_size=1, max_size=10))
            target = node if draw(st.booleans()) else spec
            if target is spec:
                named.add(key)
            target[key] = draw(scalars)
        elif op == "deep":
            node[leaf] = _nest(
                draw(scalars), draw(st.integers(50, 1000)), draw(st.sampled_from(["list", "dict"]))
            )
            named.add("spec")
        else:  # huge or out-of-range numbers
            node[leaf] = draw(
                st.sampled_from([10**400, -(10**400), 1e308 * 10, 2**64, -5, 0, 0.5, 1e-320])
            )
    return spec, named


def _check_error(err: SpecError, named: set[str] | None = None) -> None:
    msg = str(err)
    assert msg == err.one_line() and "\n" not in msg and "\r" not in msg
    assert err.field and msg.startswith(err.field)
    assert len(msg) < 4000, msg[:200]
    if named is not None:
        top = err.field.split(".")[0].split("[")[0]
        # Odd keys typed by the user are shown quoted: ['\r'], [''], ['a.b'].
        quoted = err.field.startswith("[") and any(repr(n)[:10] in err.field for n in named)
        assert top in named or err.field in named or quoted, (err.field, named)


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty working directory: anything the code under test writes shows up here."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ACTSWEEP_HOME", str(tmp_path / "home-must-not-appear"))
    monkeypatch.setenv("HOME", str(tmp_path / "home-must-not-appear"))
    return work


def test_parse_spec_raises_only_spec_errors_naming_the_field(cwd: Path) -> None:
    seen: Counter[str] = Counter()

    @fuzz(1400)
    @given(malformed_specs())
    def check(case: tuple[Any, set[str]]) -> None:
        data, named = case
        try:
            spec = parse_spec(data)
        except SpecError as err:
            _check_error(err, named)
            seen["malformed"] += 1
        else:
            assert isinstance(spec, SearchSpec)  # a mutation may leave a valid spec
            seen["valid"] += 1

    check()
    assert seen["malformed"] >= 1250, seen
    assert _listing(cwd.parent) == {"work"}, "parsing wrote files"
    print(f"parse_spec fuzz: {dict(seen)}")


# --- YAML files ---------------------------------------------------------------------------

TAGS = [
    "!!python/object/apply:os.system [{cmd!r}]",
    "!!python/object/apply:subprocess.check_call [[sh, -c, {cmd!r}]]",
    "!!python/object/new:os.system [{cmd!r}]",
    "!!python/name:os.system",
    "!!python/module:os",
    "!!python/object:builtins.object {{}}",
    "!!python/tuple [1, 2]",
    "!<tag:yaml.org,2002:python/object/apply:os.system> [{cmd!r}]",
    "!!binary aGVsbG8=",
    "!!set {{a, b}}",
    "!!omap [a: 1, b: 2]",
    "!!timestamp 2001-12-14t21:59:43.10-05:00",
    "!!int '12'",
    "!!float 'x'",
    "!!str 3",
    "!custom {{x: 1}}",
    "&a [*a]",
    "*undefined",
    "{{? [a, b] : c}}",
    "2001-12-14",
    "0x" + "f" * 5000,
    "9" * 5000,
    "1e99999",
    "-.inf",
    ".nan",
    "0o777",
    "1:20:30",
    "~",
    "'unterminated",
    "[a, b",
    "{{a: 1, a: 2}}",
]


def _bomb(depth: int, fan: int, at: str) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fan) + "]"]
    for i in range(1, depth + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fan) + "]")
    base = yaml.safe_dump(BASE, sort_keys=False)
    return "\n".join(lines) + "\n" + base.replace(f"{at}:", f"{at}: *l{depth}\nold_{at}:", 1)


@st.composite
def malformed_yaml(draw: st.DrawFn, marker: str) -> bytes:
    kind = draw(st.sampled_from(["dump", "tag", "tag", "junk", "deep", "bomb", "splice"]))
    if kind == "dump":
        data, _ = draw(malformed_specs())
        try:
            return yaml.safe_dump(data, sort_keys=False).encode()
        except (yaml.YAMLError, RecursionError):
            return b"name: [\n"
    if kind == "tag":
        tag = draw(st.sampled_from(TAGS)).format(cmd=f"touch {marker}")
        field = draw(st.sampled_from([f for f in FIELDS if len(f) == 1] + [("space",)]))
        text = yaml.safe_dump(BASE, sort_keys=False)
        if f"{field[0]}:" in text:
            return text.replace(f"{field[0]}:", f"{field[0]}: {tag}\nx_{field[0]}:", 1).encode()
        return (text + f"{field[0]}: {tag}\n").encode()
    if kind == "junk":
        return draw(st.binary(max_size=300))
    if kind == "deep":
        n = draw(st.integers(100, 20000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("- ", "")]))
        if opener == "- ":
            return "".join("  " * i + "- \n" for i in range(min(n, 2000))).encode()
        return (f"name: {opener * n}1{closer * n}\n").encode()
    if kind == "bomb":
        return _bomb(draw(st.integers(3, 9)), draw(st.integers(5, 12)), "name").encode()
    # splice random text into a valid document
    text = yaml.safe_dump(BASE, sort_keys=False)
    at = draw(st.integers(0, len(text)))
    return (text[:at] + draw(st.text(max_size=40)) + text[at:]).encode(
        "utf-8", errors="surrogatepass"
    )


def test_load_spec_raises_only_spec_errors_and_executes_nothing(cwd: Path) -> None:
    marker = cwd / "pwned"
    seen: Counter[str] = Counter()
    spec_file = cwd / "spec.yaml"

    @fuzz(850)
    @given(malformed_yaml(str(marker)))
    def check(raw: bytes) -> None:
        spec_file.write_bytes(raw)
        try:
            load_spec(spec_file)
        except SpecError as err:
            _check_error(err)
            seen["malformed"] += 1
        else:
            seen["valid"] += 1
        assert not marker.exists(), "a YAML tag executed a command"
        assert _listing(cwd.parent) == {"work", "work/spec.yaml"}

    check()
    assert seen["malformed"] >= 750, seen
    print(f"load_spec fuzz: {dict(seen)}")


def test_bounded_loader_edge_cases(cwd: Path) -> None:
    """The cases the fuzz draws rarely, each once: size cap, the big bomb, NUL in a path."""
    p = cwd / "s.yaml"
    p.write_bytes(b"name: x\n" + b"#" * MAX_SPEC_BYTES)
    with pytest.raises(SpecError, match="larger than"):
        load_spec(p)
    p.write_text(_bomb(9, 9, "name"))  # 9**10 values if expanded: refused, and quickly
    with pytest.raises(SpecError, match="expands to more than"):
        load_spec(p)
    p.write_text(_bomb(9, 9, "sampler").replace("sampler:", "sampler: {name: *l9}\nx:", 1))
    with pytest.raises(SpecError, match="SPEC: YAML expands"):
        load_spec(p)
    with pytest.raises(SpecError, match="SPEC:"):
        load_spec("bad\x00path.yaml")
    p.write_text("name: x\nseed: " + "9" * 5000 + "\n")
    with pytest.raises(SpecError, match="integer longer than"):
        load_spec(p)
    p.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError, match="python/object/apply"):
        load_spec(p)
    assert not (cwd / "pwned").exists()


# --- tracking URIs ------------------------------------------------------------------------

uris = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, rest: f"{scheme}{rest}",
        st.sampled_from([*(f"{s}://" for s in URI_SCHEMES), "sqlite:///", "http://[", "x+y://"]),
        st.one_of(
            st.text(max_size=40),
            st.sampled_from(
                [
                    "",
                    "[",
                    "[::1",
                    "~nosuchuser_actsweep/m.db",
                    "a" * 5000 + "/m.db",
                    "/" + "a/" * 3000 + "m.db",
                    ":memory:",
                    "host:99999999",
                    "user:pw@",
                    "\udcff/m.db",
                    "?mode=ro",
                ]
            ),
        ),
    ),
)


def test_tracking_uris_raise_only_spec_errors(cwd: Path) -> None:
    seen: Counter[str] = Counter()

    @fuzz(600)
    @given(uris)
    def check(uri: str) -> None:
        calls = [
            (lambda: check_tracking_uri(uri), "--tracking-uri"),
            (lambda: check_tracking_uri(uri, "tracking.uri", local=False), "tracking.uri"),
        ]
        if uri:  # an empty spec value means "not set", which resolves to the default store
            calls.append((lambda: resolve_tracking_uri(None, uri), "tracking.uri"))
        for call, field in calls:
            try:
                assert call() == uri
            except SpecError as err:
                _check_error(err, {field})
                seen["bad"] += 1
        try:
            parse_spec({**copy.deepcopy(BASE), "tracking": {"uri": uri}})
        except SpecError as err:
            _check_error(err, {"tracking"})
            assert err.field == "tracking.uri"

    check()
    assert seen["bad"] >= 600, seen
    assert _listing(cwd.parent) == {"work"}


# --- command lines ------------------------------------------------------------------------

COMMANDS = ("run", "validate", "leaderboard", "report", "ui", "server", "submit", "jobs")


def _bad_uri(uri: str) -> bool:
    try:
        check_tracking_uri(uri)
    except SpecError:
        return True
    return False


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


@st.composite
def bad_argv(draw: st.DrawFn, good_spec: str, bad_spec: str) -> list[str]:
    """Command lines each guaranteed to be wrong somewhere (so none of them runs anything)."""
    token = st.text(max_size=12)
    kind = draw(st.integers(0, 8))
    if kind == 0:  # not a command at all
        first = draw(token.filter(lambda t: t not in COMMANDS and not t.startswith("-")))
        return [first, *draw(st.lists(token, max_size=3))]
    if kind == 1:
        spec = draw(st.sampled_from([bad_spec, "missing.yaml", ".", "", "x\x00y", "\udcff.yaml"]))
        return [draw(st.sampled_from(["run", "validate", "submit"])), spec]
    if kind == 2:  # a good spec with a bad tracking URI
        return ["run", good_spec, "--tracking-uri", draw(uris.filter(_bad_uri))]
    if kind == 3:
        cmd = draw(st.sampled_from(["leaderboard", "report", "ui"]))
        rest = ["--out", "o"] if cmd == "report" else []
        return [cmd, "exp", *rest, "--tracking-uri", draw(uris.filter(_bad_uri))]
    if kind == 4:  # an unknown flag
        flag = "--" + draw(st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12))
        cmd = draw(st.sampled_from(["run", "validate", "leaderboard", "ui"]))
        known = {"--tracking-uri", "--address", "--optuna-storage", "--quiet", "--timings-json"}
        known |= {"--search", "--format", "--port", "--host", "--help", "--out"}
        if any(k.startswith(flag) for k in known):
            flag = "--zz" + flag
        return [cmd, good_spec if cmd in ("run", "validate") else "exp", flag]
    if kind == 5:
        fmt = draw(token.filter(lambda t: t not in ("table", "json", "csv", "markdown")))
        return ["leaderboard", "exp", "--format", fmt]
    if kind == 6:  # a port that is not a number, or not a TCP port
        port = draw(
            st.one_of(
                token.filter(lambda t: not _is_int(t) and not t.startswith("-")),
                st.integers().filter(lambda p: not 0 < p < 65536).map(str),
            )
        )
        return ["ui", "--tracking-uri", "sqlite:///m.db", "--port", port]
    if kind == 7:  # a required argument missing
        return draw(
            st.sampled_from(
                [["run"], ["validate"], ["report", "exp"], ["leaderboard"], ["jobs"], ["submit"]]
            )
        )
    # a flag given without its value
    flag = draw(st.sampled_from(["--tracking-uri", "--optuna-storage", "--address"]))
    return ["run", good_spec, flag]


def test_cli_bad_arguments_exit_2_with_one_line_and_write_nothing(
    cwd: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    good = cwd / "good.yaml"
    good.write_text(yaml.safe_dump(BASE, sort_keys=False))
    bad = cwd / "bad.yaml"
    bad.write_text("name: x\ndataset: digits\nspace: {activations: [relu, nope]}\n")
    (cwd / "m.db").write_bytes(b"")  # `ui --port` needs an existing store to get that far

    # Safety net, not a mock: if a bad command line ever got through, fail at once instead of
    # running a search or exec-ing a server in the test process.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a bad command line was acted on")

    import search.orchestrate

    monkeypatch.setattr(search.orchestrate, "run_search", refuse)
    monkeypatch.setattr(os, "execvpe", refuse)
    monkeypatch.setattr(os, "execve", refuse)
    before = _listing(cwd.parent)
    seen: Counter[str] = Counter()

    @fuzz(250)
    @given(bad_argv(str(good), str(bad)))
    def check(argv: list[str]) -> None:
        capsys.readouterr()
        code: Any
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        out = capsys.readouterr()
        assert code == 2, (argv, code, out.err)
        assert out.err.startswith("actsweep") and "error" in out.err, (argv, out.err)
        assert out.err.count("\n") == 1 and out.err.endswith("\n"), (argv, out.err)
        assert "Traceback" not in out.err
        assert _listing(cwd.parent) == before, argv
        seen["bad"] += 1

    check()
    assert seen["bad"] >= 250, seen


def test_cli_in_a_real_process_prints_no_traceback(cwd: Path) -> None:
    """A real process on the input whose error message used to crash while being printed: a
    spec path with an undecodable byte from argv (the in-process fuzz covers the rest)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, "-m", "search.cli", "run", "x\udcff.yaml"],
        cwd=cwd,
        env=env,
        capture_output=True,
        timeout=120,
    )
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, err
    assert err.startswith("actsweep: error: SPEC: no such file: x\\xff.yaml"), err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert _listing(cwd) == set()

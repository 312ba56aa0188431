"""The command line's errors and progress reports.

Every error is one line on stderr that names the problem and the fix, never a
traceback: exit 2 for a usage error, 1 when the command could not finish (missing
data, an unreachable cloud, no translator), 130 when interrupted. Progress reports
in a log (stderr not a terminal) are whole lines, never carriage-return frames.
Most cases run the real CLI in a subprocess; the long table of argument checks runs
in-process (same parser, same main()) to keep the suite fast.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys

import pytest

from noiseforge import _progress
from noiseforge.cli import main


def _env(tmp_path, **extra) -> dict:
    env = {**os.environ, "NOISEFORGE_CACHE": str(tmp_path / "cache")}
    env.pop("NOISEFORGE_PROGRESS", None)
    env.pop("NOISEFORGE_PROGRESS_INTERVAL", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(tmp_path, *args, timeout=300, **env) -> subprocess.CompletedProcess:
    """``python -m noiseforge ARGS`` in ``tmp_path`` (stdout and stderr are pipes)."""
    return subprocess.run(
        [sys.executable, "-m", "noiseforge", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        timeout=timeout,
        check=False,
    )


def assert_one_line(stderr: str, *fragments: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_error(done: subprocess.CompletedProcess, status: int, *fragments: str) -> str:
    assert done.returncode == status, (done.returncode, done.stderr)
    return assert_one_line(done.stderr, *fragments)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def queries(tmp_path):
    """A small competition file (QC rows in seven languages)."""
    from noiseforge.relevance import data
    from noiseforge.relevance.fixture import make_fixture

    path = tmp_path / "queries.jsonl"
    data.write(make_fixture("QC", 80, seed=1), path)
    return path


# ----------------------------------------------------------------------------- usage (exit 2)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["demo", "--parts", "noise", "--limit", "0"], ["--limit must be >= 1, got 0"]),
        (["demo", "--parts", "noise", "--limit", "-3"], ["--limit must be >= 1, got -3"]),
        (["demo", "--bogus"], ["unrecognized arguments: --bogus", "'noiseforge demo --help'"]),
    ],
)
def test_usage_errors_in_a_subprocess(tmp_path, args, fragments):
    done = run_cli(tmp_path, *args)
    line = assert_error(done, 2, *fragments)
    assert line.startswith(f"noiseforge {args[0]}")


def test_unwritable_output_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_cli(tmp_path, "ldp", "run", "--out", blocker / "report")
    assert_error(done, 2, "--out", f"{blocker} is a file", "choose another folder")


def _usage_cases(tmp):
    f = tmp / "queries.jsonl"
    out = ["--out", str(tmp / "out.jsonl")]
    blocker = tmp / "a-file"
    return [
        (["demo", "--copies", "0"], "--copies must be >= 1"),
        (["demo", "--epsilon", "inf"], "--epsilon must be a finite number > 0"),
        (["demo", "--epsilon", "-1"], "--epsilon must be a finite number > 0"),
        (["demo", "--delta", "1", "--mechanism", "gaussian"], "--delta must be a finite number in (0, 1)"),
        (["demo", "--delta", "0.1"], "--delta applies to --mechanism gaussian only"),
        (["demo", "--seed", "-1"], "--seed must be a whole number in [0, 2**63)"),
        (["demo", "--backend", "gpu"], "--backend: invalid choice: 'gpu'"),
        (["demo", "--parts", ""], "unknown demo part(s)"),
        (["demo", "--relevance-data", str(tmp / "nowhere")], "does not exist: check the path"),
        (["demo", "--relevance-data", str(tmp / "emptydir")], "holds no *.jsonl"),
        (["ldp", "run", "--epsilon", "0"], "--epsilon must be a number > 0"),
        (["ldp", "run", "--epsilon=-inf"], "--epsilon must be a number > 0"),
        (["ldp", "run", "--epsilon", "nan"], "--epsilon must be a number > 0"),
        (["ldp"], "choose a command: run, sweep, ledger"),
        (["ldp", "run", "--limit", "0"], "--limit must be at least 2 (superimposition mixes pairs)"),
        (["ldp", "run", "--copies", "-1"], "--copies must be >= 0"),
        (["ldp", "run", "--copies", "two"], "--copies must be a whole number >= 0"),
        (["ldp", "run", "--superimposed", "nan"], "--superimposed must be a finite number >= 0"),
        (["ldp", "run", "--epochs", "0"], "--epochs must be >= 1"),
        (["ldp", "run", "--threads", "-2"], "--threads must be >= 1"),
        (["ldp", "run", "--seed", "2e3"], "--seed must be a whole number"),
        (["ldp", "run", "--cloud-url", "localhost:8000"], "url must be http(s)://host"),
        (["ldp", "run", "--cloud-url", "http://h:99999"], "invalid port"),
        (["ldp", "sweep", "--epsilons", "1,nan"], "epsilon must be > 0"),
        (["ldp", "sweep", "--epsilons", ""], "cannot read epsilon"),
        (["ldp", "sweep", "--epsilons", "1,inf", "--cloud-url", "http://127.0.0.1:9"], "never sent to a remote cloud"),
        (["relevance"], "choose a command: augment, mine, filter, train, evaluate, run"),
        (["relevance", "augment", str(f), *out], "the following arguments are required: --languages"),
        (["relevance", "augment", str(f), *out, "--languages", ","], "no languages in ','"),
        (["relevance", "augment", str(f), *out, "--languages", "de", "--per-language", "0"], "--per-language must be >= 1"),
        (["relevance", "augment", str(f), "--out", str(tmp / "o.txt"), "--languages", "de"], "end the name in .jsonl"),
        (["relevance", "augment", str(f), "--out", str(f), "--languages", "de", "--overwrite"], "is an input file"),
        (["relevance", "augment", str(tmp / "none.jsonl"), *out, "--languages", "de"], "none.jsonl does not exist"),
        (["relevance", "mine", str(f), "--out", str(blocker / "x.jsonl")], f"{blocker} is a file"),
        (["relevance", "mine", str(f), *out, "--positive-share", "0"], "--positive-share must be a finite number in (0, 1]"),
        (["relevance", "filter", str(f), *out, "--folds", "1"], "--folds must be >= 2"),
        (["relevance", "filter", str(f), *out, "--confidence", "1"], "--confidence must be a finite number in (0.5, 1)"),
        (["relevance", "filter", str(f), *out, "--review", str(tmp / "out.jsonl")], "end the name in .csv"),
        (["relevance", "train", str(f), "--model-out", str(tmp)], "is a folder"),
        (["relevance", "evaluate", str(f), "--model", str(tmp / "none.nfmodel")], "none.nfmodel does not exist"),
        (["relevance", "evaluate", str(f), "--model", str(f), "--threshold", "1.5"], "--threshold must be a finite number in [0, 1]"),
        (["relevance", "run", "--out", str(blocker)], f"{blocker} is a file"),
        (["relevance", "run", "--strategies", "QC"], "write TASK=STEPS"),
        (["relevance", "run", "--seed", "-4"], "--seed must be a whole number"),
    ]  # fmt: skip


def test_every_usage_error_is_one_line_with_status_2(tmp_path, queries, capsys):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "emptydir").mkdir()
    for args, fragment in _usage_cases(tmp_path):
        status = main(args)
        captured = capsys.readouterr()
        assert status == 2, (args, status, captured.err)
        line = assert_one_line(captured.err, fragment)
        assert "--help'" in line, line  # where the options are described
    assert not (tmp_path / "out.jsonl").exists()


def test_help_lists_the_new_flags(capsys):
    assert main(["relevance", "augment", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--best-effort" in text and "naming the packages to install" in text
    assert main(["demo", "--help"]) == 0
    assert "skipped with the install command" in " ".join(capsys.readouterr().out.split())


# ----------------------------------------------------------------------------- run time (exit 1)


def test_a_dead_cloud_url_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}"
    done = run_cli(tmp_path, "ldp", "run", "--cloud-url", url, "--quiet")
    assert_error(
        done, 1, f"cannot reach the cloud at {url}", "noiseforge cloud serve", "--cloud-url"
    )


def test_a_cloud_that_dies_during_the_run_is_one_line(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    from noiseforge.ldp import command
    from noiseforge.ldp import experiment as ex
    from noiseforge.ldp.cloud import CloudQueryError

    def failing_sweep(*args, **kwargs):
        raise CloudQueryError("the cloud failed 4 times on rows 0..9 (connection refused)")

    monkeypatch.setattr(command, "_reachable_cloud", lambda url: object())
    monkeypatch.setattr(ex, "task_setup", lambda *a, **k: SimpleNamespace(description="d"))
    monkeypatch.setattr(ex, "sweep", failing_sweep)
    url = "http://127.0.0.1:9"
    out = tmp_path / "run"
    assert main(["ldp", "run", "--quiet", "--cloud-url", url, "--out", str(out)]) == 1
    assert_one_line(
        capsys.readouterr().err, "failed 4 times", f"the cloud at {url} still runs", "run again"
    )
    assert not out.exists()


def test_demo_without_fashion_mnist_skips_with_the_install_command(tmp_path):
    (tmp_path / "empty").mkdir()
    done = run_cli(
        tmp_path, "demo", "--parts", "noise,ldpkit", NOISEFORGE_FASHION_MNIST=tmp_path / "empty"
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 3, done.stderr
    for part, line in zip(("noise", "ldpkit"), lines, strict=False):
        assert f"skipped the {part} part" in line
        assert "apt-get install dataset-fashion-mnist" in line
        assert "NOISEFORGE_FASHION_MNIST=" in line
    assert "skipped noise, ldpkit" in lines[2]


@pytest.mark.parametrize(
    "exc, status, fragment",
    [
        ("CloudUnavailableError('GET /v1/health failed: refused')", 1, "health failed"),
        ("PermissionError(13, 'Permission denied', '/x/y')", 1, "/x/y: Permission denied; check"),
        ("OSError(28, 'No space left on device')", 1, "free some disk space"),
        ("DatasetNotFoundError('no data: apt-get install x')", 1, "apt-get install x"),
        ("TranslationUnavailable('cannot translate en->ko:\\n  apertium: a\\n  freedict: b')", 1,
         "cannot translate en->ko: apertium: a; freedict: b"),
        ("ImportError('needs pyarrow: pip install pyarrow')", 1, "pip install pyarrow"),
        ("ValueError('bad value: use 3')", 2, "bad value: use 3"),
        ("FileNotFoundError('no ledger at x: give a budget')", 2, "no ledger at x"),
        ("KeyboardInterrupt()", 130, "interrupted (Ctrl-C)"),
    ],
)  # fmt: skip
def test_main_turns_expected_failures_into_one_line(monkeypatch, capsys, exc, status, fragment):
    from noiseforge.data import DatasetNotFoundError  # noqa: F401 -- used by eval
    from noiseforge.ldp.cloud import CloudUnavailableError  # noqa: F401
    from noiseforge.relevance.translate import TranslationUnavailable  # noqa: F401

    error = eval(exc)

    def boom():
        raise error

    monkeypatch.setattr("noiseforge.info.info_text", boom)
    assert main(["info"]) == status
    line = assert_one_line(capsys.readouterr().err, fragment)
    assert line.startswith("noiseforge info: ")


def test_a_bug_still_shows_its_traceback(monkeypatch):
    monkeypatch.setattr("noiseforge.info.info_text", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["info"])


def test_ctrl_c_is_one_line_and_status_130(tmp_path):
    """A real SIGINT in a real process, while the command runs."""
    code = (
        "import signal\n"
        "import noiseforge.info as info\n"
        "from noiseforge.cli import main\n"
        "info.info_text = lambda: signal.raise_signal(signal.SIGINT)\n"
        "raise SystemExit(main(['info']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=120,
        check=False,
    )
    assert done.returncode == 130, done.stderr
    assert_one_line(done.stderr, "noiseforge info: interrupted (Ctrl-C)")


# ----------------------------------------------------------------------------- relevance augment


def test_augment_without_a_translator_fails_and_writes_nothing(tmp_path, queries):
    """Korean has no FreeDict dictionary and no Apertium pair in Debian, so this holds on a
    machine with every translator of scripts/run.sh installed too."""
    before = queries.read_bytes()
    out = tmp_path / "augmented.jsonl"
    args = ["relevance", "augment", queries, "--from", "en", "--languages", "ko", "--quiet"]
    done = run_cli(tmp_path, *args, "--out", out)
    line = assert_error(done, 1, "no installed translator for en -> ko", "apt-get install")
    assert "dict-freedict-eng-kor" in line and "--best-effort" in line
    assert not out.exists() and queries.read_bytes() == before
    # an existing output stays as it was, even with --overwrite
    out.write_text("precious\n")
    done = run_cli(tmp_path, *args, "--out", out, "--overwrite")
    assert_error(done, 1, "apt-get install")
    assert out.read_text() == "precious\n" and queries.read_bytes() == before


def test_augment_best_effort_writes_what_it_can(tmp_path, queries):
    from noiseforge.relevance import data

    out = tmp_path / "augmented.jsonl"
    done = run_cli(
        tmp_path, "relevance", "augment", queries, "--from", "en", "--languages", "ko",
        "--best-effort", "--quiet", "--out", out,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_one_line(done.stderr, "--best-effort", "en -> ko", "apt-get install")
    assert "ko: 0 added" in done.stdout
    assert len(data.load([out])) == len(data.load([queries]))


def test_augment_never_writes_over_an_input_through_a_link(tmp_path, queries, capsys):
    link = tmp_path / "link.jsonl"
    link.symlink_to(queries)
    hard = tmp_path / "hard.jsonl"
    os.link(queries, hard)
    before = queries.read_bytes()
    for target in (link, hard):
        args = ["relevance", "augment", str(queries), "--out", str(target), "--overwrite"]
        assert main([*args, "--languages", "ko", "--best-effort", "--quiet"]) == 2
        assert_one_line(capsys.readouterr().err, "is an input file", "write the result elsewhere")
    assert queries.read_bytes() == before


def test_untranslatable_pairs_and_the_install_hint(tmp_path, queries):
    from noiseforge.relevance import data
    from noiseforge.relevance import translate as tr

    class OnlyEnglishToGerman(tr.Translator):
        name = "en-de"

        def pairs(self):
            return {("en", "de")}

        def _translate(self, texts, src, tgt):
            return texts

    df = data.load([queries])
    missing = tr.untranslatable_pairs(df, ["de", "it"], OnlyEnglishToGerman(), ["en", "fr"])
    assert missing == [("fr", "de"), ("en", "it"), ("fr", "it")]
    empty = tr.FreeDictTranslator(dict_dir=tmp_path / "no-dictionaries")
    hint = tr.install_hint(missing, "freedict", freedict=empty)
    assert (
        hint == "apt-get install dict-freedict-eng-deu dict-freedict-eng-ita dict-freedict-fra-eng"
    )
    assert "apt-cache search apertium" in tr.install_hint(missing, "auto", freedict=empty)
    assert "Apertium pair for en-it, fr-de, fr-it" in tr.install_hint(missing, "apertium")


# ----------------------------------------------------------------------------- progress reports


def test_progress_in_a_log_is_lines_not_frames(tmp_path, tiny_fashion):
    """`ldp run` with progress on and stderr a pipe: start/end lines, no '\\r' frames."""
    args = ["ldp", "run", "--epochs", "1", "--seed", "2", "--threads", "1"]
    done = run_cli(
        tmp_path, *args, "--out", tmp_path / "run", NOISEFORGE_FASHION_MNIST=tiny_fashion
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b[" not in done.stderr
    lines = done.stderr.splitlines()
    assert 4 <= len(lines) <= 20, done.stderr
    starts = [ln for ln in lines if re.search(r": started\b", ln)]
    ends = [ln for ln in lines if re.search(r": done, \d+", ln)]
    assert starts and len(starts) == len(ends), done.stderr
    assert any(ln.startswith("querying the cloud: started, 48 rows") for ln in lines), done.stderr
    # NOISEFORGE_PROGRESS=0: no reports at all
    done = run_cli(
        tmp_path, *args, "--out", tmp_path / "run2",
        NOISEFORGE_FASHION_MNIST=tiny_fashion, NOISEFORGE_PROGRESS=0,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_log_lines_come_at_most_once_per_interval():
    stream, clock = io.StringIO(), _Clock()
    bar = _progress._Lines(None, 1000, "embedding", "texts", 0, stream, 10.0, clock)
    for _ in range(100):  # 100 updates over 50 s: a status line every 10 s at most
        clock.now += 0.5
        bar.update(10)
    bar.close()
    bar.close()  # closing twice reports once
    lines = stream.getvalue().splitlines()
    assert lines[0] == "embedding: started, 1000 texts"
    assert lines[-1] == "embedding: done, 1000 texts in 50 s"
    status = lines[1:-1]
    assert 4 <= len(status) <= 5 and "\r" not in stream.getvalue()
    assert status[0] == "embedding: 200/1000 texts (20 %) after 10 s, about 40 s left"


def test_an_unfinished_stage_says_where_it_stopped():
    stream, clock = io.StringIO(), _Clock()
    bar = _progress._Lines(range(10), 10, "training", "batches", 0, stream, 60.0, clock)
    bar.set_postfix_str("epoch 1/2")
    for i in bar:
        if i == 3:
            break
    text = stream.getvalue().splitlines()
    assert text == [
        "training: started, 10 batches",
        "training: stopped at 3/10 batches (30 %) after 0.0 s",
    ]


def test_the_helper_chooses_tqdm_lines_or_nothing(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    from tqdm.auto import tqdm

    monkeypatch.setattr(sys, "stderr", Terminal())
    bar = _progress.progress_bar(range(3), desc="t")
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2]
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = _progress.progress_bar(total=3, desc="log")
    assert isinstance(bar, _progress._Lines)
    bar.update(3)
    bar.close()
    assert sys.stderr.getvalue().count("\n") == 2
    monkeypatch.setenv("NOISEFORGE_PROGRESS", "0")
    silent = _progress.progress_bar(range(3), desc="off")
    assert list(silent) == [0, 1, 2] and sys.stderr.getvalue().count("\n") == 2
    assert list(_progress.progress_bar(range(2), enabled=False)) == [0, 1]


@pytest.mark.parametrize(
    "name, value, fragment",
    [
        ("NOISEFORGE_PROGRESS_INTERVAL", "soon", "a number of seconds >= 0"),
        ("NOISEFORGE_PROGRESS_INTERVAL", "-1", "a number of seconds >= 0"),
        ("NOISEFORGE_PROGRESS", "maybe", "set it to 0 (no progress reports) or 1"),
    ],
)
def test_a_bad_progress_setting_is_a_usage_error(monkeypatch, capsys, name, value, fragment):
    monkeypatch.setenv(name, value)
    assert main(["info"]) == 2
    assert_one_line(capsys.readouterr().err, f"{name}={value!r}", fragment)


def test_a_reader_that_goes_away_stops_the_output_quietly(tmp_path):
    # `noiseforge info | head -1`: the reader closes the pipe; the command stops without an
    # error message (exit 1, as a broken pipe is not a finished command) and no traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "noiseforge", "info"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(tmp_path),
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr
    assert done.stderr == "", done.stderr

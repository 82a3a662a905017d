"""Clear errors before the work: minialex's environment variables (importing never fails for one;
each command says what is wrong and exits 2) and minialex-audit's flags, all checked first."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minialex as ma
from minialex import audit, cuda, system
from minialex.cpu import threads

BAD = {"MINIALEX_CPU_PATH": "bogus", "MINIALEX_GEMM": "fastest", "MINIALEX_THREADS": "zero",
       "MINIALEX_TUNE_BLAS": "off", "MINIALEX_TUNE_MALLOC": "no", "MINIALEX_EMU_DEBUG": "yes"}
EXPECTED = ["MINIALEX_CPU_PATH expected reference or fast, got 'bogus'",
            "MINIALEX_GEMM expected blas or tiled or wmma, got 'fastest'",
            "MINIALEX_TUNE_MALLOC expected 0 or 1, got 'no'",
            "MINIALEX_TUNE_BLAS expected 0 or 1, got 'off'",
            "MINIALEX_EMU_DEBUG expected 0 or 1, got 'yes'",
            "MINIALEX_THREADS expected an integer from 1 to {}, got 'zero'"]   # the most: system.max_threads()


def test_importing_never_fails_for_an_environment_variable_and_falls_back_to_the_defaults():
    code = ("import minialex as ma; from minialex import cuda, system; "
            "print(ma.get_cpu_path(), cuda.get_gemm(), len(system.check_environment()))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, **BAD))
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["fast", "blas", "6"]


def test_good_values_are_taken_at_import():
    code = "import minialex as ma; from minialex import cuda; print(ma.get_cpu_path(), cuda.get_gemm())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, MINIALEX_CPU_PATH="reference", MINIALEX_GEMM="tiled"))
    assert run.stdout.split() == ["reference", "tiled"], run.stderr


def test_check_environment_names_each_bad_variable(monkeypatch):
    for name in BAD:
        monkeypatch.delenv(name, raising=False)
    assert system.check_environment() == []
    for name, value in BAD.items():
        monkeypatch.setenv(name, value)
    assert system.check_environment() == EXPECTED[:-1] + [EXPECTED[-1].format(system.max_threads())]
    for name, good in (("MINIALEX_CPU_PATH", "reference"), ("MINIALEX_GEMM", "tiled"), ("MINIALEX_THREADS", "3"),
                       ("MINIALEX_TUNE_BLAS", "0"), ("MINIALEX_TUNE_MALLOC", "1"), ("MINIALEX_EMU_DEBUG", "")):
        monkeypatch.setenv(name, good)
    assert system.check_environment() == []
    for bad in ("0", "-2", "1.5", " 4", "4 ", "+4", "\u0663", str(system.max_threads() + 1)):
        monkeypatch.setenv("MINIALEX_THREADS", bad)
        assert system.check_environment() == [f"MINIALEX_THREADS expected an integer from 1 to "
                                              f"{system.max_threads()}, got {bad!r}"]


def test_the_api_keeps_its_own_errors(monkeypatch):
    with pytest.raises(ValueError, match="set_cpu_path: path expected 'fast' or 'reference', got 'bogus'"):
        ma.set_cpu_path("bogus")
    with pytest.raises(ValueError, match="set_gemm: mode expected 'blas', 'tiled' or 'wmma', got 'x'"):
        cuda.set_gemm("x")
    monkeypatch.setenv("MINIALEX_THREADS", "zero")
    with pytest.raises(ValueError, match=r"MINIALEX_THREADS expected an integer from 1 to \d+, got 'zero'"):
        threads.parallel(lambda lo, hi: None, 10, threads.PARALLEL_MIN_ELEMENTS)


def test_minialex_audit_says_a_bad_variable_and_exits_2_before_any_work(monkeypatch, capsys):
    monkeypatch.setenv("MINIALEX_CPU_PATH", "bogus")
    monkeypatch.setenv("MINIALEX_GEMM", "x")
    monkeypatch.setattr(audit, "audit", lambda *a, **k: pytest.fail("the audit ran"))
    with pytest.raises(SystemExit) as stop:
        audit.main([])
    assert stop.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "minialex-audit: error: MINIALEX_CPU_PATH expected reference or fast, got 'bogus'",
        "minialex-audit: error: MINIALEX_GEMM expected blas or tiled or wmma, got 'x'"]


def test_the_command_line_end_to_end(tmp_path):
    run = subprocess.run([sys.executable, "-m", "minialex.audit"], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, MINIALEX_CPU_PATH="bogus"))
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == "minialex-audit: error: MINIALEX_CPU_PATH expected reference or fast, got 'bogus'\n"


def audit_refuses(monkeypatch, capsys, argv):
    """The error lines of `minialex-audit argv`, which must exit 2 before the audit starts."""
    monkeypatch.setattr(audit, "audit", lambda *a, **k: pytest.fail("the audit ran"))
    with pytest.raises(SystemExit) as stop:
        audit.main(argv)
    assert stop.value.code == 2
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("minialex-audit: error:")]


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], f"--seed expected an integer from 0 to {2**63 - 1}, got -1"),
    (["--batch", "100000"], "--batch expected an integer from 2 to 256, got 100000"),
    (["--batch", "1"], "--batch expected an integer from 2 to 256, got 1"),
    (["--classes", "1000000"], "--classes expected an integer from 2 to 100000, got 1000000"),
    (["--samples", "0"], "--samples expected an integer from 1 to 10000, got 0"),
    (["--graph", "graph.gif"], "--graph expected a .png, .svg or .dot file name, got 'graph.gif'"),
    (["--explain"], "--explain expected with --inject BUG (it explains the injected bug)"),
    (["--inject", "nonsense"], "--inject: no bug named 'nonsense'; see --list-bugs"),
])
def test_minialex_audit_checks_every_flag_first(monkeypatch, capsys, argv, message):
    assert audit_refuses(monkeypatch, capsys, argv) == [f"minialex-audit: error: {message}"]


def test_a_graph_path_that_cannot_be_written_is_found_before_the_audit(monkeypatch, capsys, tmp_path):
    missing = tmp_path / "no" / "such" / "graph.png"
    assert audit_refuses(monkeypatch, capsys, ["--graph", str(missing)]) == [
        f"minialex-audit: error: --graph {missing}: its folder {missing.parent} does not exist"]
    (tmp_path / "g.png").mkdir()
    assert audit_refuses(monkeypatch, capsys, ["--graph", str(tmp_path / "g.png")]) == [
        f"minialex-audit: error: --graph {tmp_path / 'g.png'} is a folder, not a file"]


def test_every_problem_is_said_at_once(monkeypatch, capsys):
    assert audit_refuses(monkeypatch, capsys, ["--seed", "-3", "--batch", "0", "--samples", "-1"]) == [
        "minialex-audit: error: --batch expected an integer from 2 to 256, got 0",
        "minialex-audit: error: --samples expected an integer from 1 to 10000, got -1",
        f"minialex-audit: error: --seed expected an integer from 0 to {2**63 - 1}, got -3"]


def test_the_memory_an_audit_needs_is_said_before_it_starts(monkeypatch, capsys):
    monkeypatch.setattr(audit, "available_memory", lambda: 2 << 30)
    need = audit.memory_needed("alexnet", 1000, 64)
    assert need == (2800 << 20) + 64 * (60 << 20) + 1000 * (150 << 10)
    assert audit_refuses(monkeypatch, capsys, ["--arch", "alexnet", "--classes", "1000", "--batch", "64"]) == [
        f"minialex-audit: error: --batch 64 and --classes 1000 need about {need / 2**30:.1f} GiB for alexnet in "
        f"float64, and 2.0 GiB is available: use a smaller --batch or --classes"]
    assert audit.problems("alexnet-mini", 10, 2) == []             # the default fits in 2 GiB


def test_the_audit_function_checks_its_arguments_too():
    with pytest.raises(ValueError, match=r"audit: seed expected an integer from 0 to \d+, got -1"):
        audit.audit(seed=-1)
    with pytest.raises(ValueError, match=r"audit: batch expected an integer from 2 to 256, got 2.5"):
        audit.audit(batch=2.5)
    with pytest.raises(ValueError, match=r"audit: arch expected one of alexnet, alexnet-mini, got 'vgg'"):
        audit.audit(arch="vgg")


def test_a_device_that_cannot_run_is_found_before_the_audit(monkeypatch, capsys):
    def no_device(*args, **kwargs):
        raise RuntimeError("no C++ compiler for the emulator")
    monkeypatch.setattr(audit.F, "relu", no_device)
    assert audit_refuses(monkeypatch, capsys, ["--device", "cuda-emu"]) == [
        "minialex-audit: error: --device cuda-emu: no C++ compiler for the emulator"]
    assert np.isfinite(audit.memory_needed("alexnet-mini", 10, 2))

"""The notebooks in notebooks/: each runs top to bottom in a fresh kernel (their `assert` lines are
the learner's expectations, so a notebook that runs is also a test), and none is committed with
outputs.

Running them needs nbclient, nbformat and ipykernel (the test extra); without them those tests
skip, saying so. The kernel is this Python: a kernelspec written into a temporary folder runs
sys.executable, whatever `python3` kernelspecs the machine has elsewhere, and the first cell run
checks it. Each notebook runs in a temporary working folder, with IPython's and Jupyter's own
files there too, so nothing is written into the repository or the home folder's Jupyter state.
"""
import json
import re
import sys
from pathlib import Path

import pytest

FOLDER = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(FOLDER.glob("*.ipynb"))
CELL_TIMEOUT = 120          # seconds a cell may take (the longest, a training run: 5 to 40 s on 2 busy cores)
ANSI = re.compile(r"\x1b\[[0-9;]*m")   # the colours of an IPython traceback
STEPS = 7                   # "Learn backprop with minialex": 8 steps, the audit's two in one notebook


def _name(path):
    return path.name


def test_a_notebook_per_step_each_listed_in_the_readme():
    assert len(NOTEBOOKS) == STEPS, [p.name for p in NOTEBOOKS]
    readme = (FOLDER / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in NOTEBOOKS if p.name not in readme]
    assert not missing, f"notebooks/README.md does not list {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_committed_without_outputs(path):
    """Outputs belong to a learner's run, not the repository: they bloat diffs and go stale."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and nb["metadata"]["kernelspec"]["name"] == "python3", path.name
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty and "widgets" not in nb["metadata"], (
        f"{path.name}: cells {dirty} hold outputs or execution counts (or the metadata widget state); "
        f"strip them: jupyter nbconvert --clear-output --inplace notebooks/{path.name}")
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "".join(first["source"]).startswith("# "), \
        f"{path.name}: the first cell should be its title"


def _kernel_manager(tmp_path):
    """A kernel manager whose only kernelspec, `python3`, runs this Python."""
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (the tests' Python)", "language": "python"}))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_name)
def test_runs_top_to_bottom(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="running the notebooks needs nbformat (pip install '.[test]')")
    nbclient = pytest.importorskip("nbclient", reason="running the notebooks needs nbclient (pip install '.[test]')")
    pytest.importorskip("ipykernel", reason="running the notebooks needs ipykernel (pip install '.[test]')")
    from nbclient.exceptions import CellExecutionError

    work = tmp_path / "work"
    work.mkdir()
    for variable, folder in (("IPYTHONDIR", "ipython"), ("JUPYTER_RUNTIME_DIR", "runtime")):
        (tmp_path / folder).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / folder))
    nb = nbformat.read(path, as_version=4)
    same_python = nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, ('the kernel runs another Python', sys.executable)")
    nb.cells.insert(0, same_python)
    before = sorted(FOLDER.iterdir())
    client = nbclient.NotebookClient(nb, km=_kernel_manager(tmp_path), timeout=CELL_TIMEOUT, startup_timeout=60,
                                     resources={"metadata": {"path": str(work)}})
    failure = None
    try:
        client.execute(cleanup_kc=True)          # (a client given its kernel manager leaves the kernel running)
    except CellExecutionError as e:              # its text: the cell's source, its output and the traceback
        failed = next(i for i, cell in enumerate(nb.cells)
                      if any(o.get("output_type") == "error" for o in cell.get("outputs", [])))
        where = "the check that the kernel runs this Python" if failed == 0 else \
            f"cell {failed} (counting every cell from 1)"
        failure = f"{path.name}, {where}:\n{ANSI.sub('', str(e))}"
    if failure:
        pytest.fail(failure, pytrace=False)
    assert sorted(FOLDER.iterdir()) == before, "running a notebook wrote into notebooks/"

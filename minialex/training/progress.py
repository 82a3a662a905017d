"""Printing for the callbacks: say() (stdout, surviving a closed pipe) and a progress bar that
fits where the output goes: tqdm on a terminal, tqdm.auto (a widget) in a Jupyter notebook, and
a few plain lines in a log file, where tqdm's carriage-return updates would fill the file."""
import os
import sys


def say(text):
    """print to stdout; a closed pipe (`minialex-train ... | head`) silences it instead of ending the run."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def in_notebook():
    """Whether this runs in a Jupyter kernel (IPython's kernel app is loaded and running)."""
    shell = sys.modules.get("IPython")
    try:
        return shell is not None and type(shell.get_ipython()).__name__ == "ZMQInteractiveShell"
    except AttributeError:
        return False


class PlainProgress:
    """The progress bar for a log file: at most a few plain lines per epoch, no carriage returns."""

    def __init__(self, total, desc, lines=4):
        self.total, self.desc, self.n, self.postfix = total, desc, 0, {}
        self.marks = {max(1, total * k // lines) for k in range(1, lines)} if total else set()

    def update(self, n=1):
        self.n += n
        if self.n in self.marks:
            extra = "  ".join(f"{k} {v}" for k, v in self.postfix.items())
            say(f"{self.desc}: {self.n}/{self.total} batches  {extra}")

    def set_postfix(self, **kw):
        self.postfix = kw

    def close(self):
        pass


def progress_bar(total, desc):
    if in_notebook():
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, unit="batch", leave=False)
    if not sys.stderr.isatty():
        return PlainProgress(total, desc)
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, mininterval=0.5)

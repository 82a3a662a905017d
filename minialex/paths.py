"""Where minialex keeps what it makes once: compiled emulator kernels, the built-in dataset,
dataset statistics."""
import os
from pathlib import Path


def cache_root():
    """$MINIALEX_CACHE, else $XDG_CACHE_HOME/minialex, else ~/.cache/minialex."""
    return Path(os.environ.get("MINIALEX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "minialex"))

"""Decoded stores made by the tests go to a temporary folder, not the user's cache."""
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _stores_in_a_temporary_folder(tmp_path_factory):
    previous = os.environ.get("MINIALEX_STORES")
    os.environ["MINIALEX_STORES"] = str(tmp_path_factory.mktemp("stores"))
    yield
    if previous is None:
        os.environ.pop("MINIALEX_STORES", None)
    else:
        os.environ["MINIALEX_STORES"] = previous

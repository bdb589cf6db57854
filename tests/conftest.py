import importlib.util
import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
REFERENCE = DATA / "reference"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    """Import ``scripts/<name>.py`` (the scripts are not part of the package) as a module."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def cases():
    """The published reference cases (copied from the public archive)."""
    return json.loads((REFERENCE / "cases.json").read_text())


@pytest.fixture
def write_xyz(tmp_path):
    """Write an xyz file from (symbol, x, y, z) rows in Å; returns its path."""

    def _write(name, rows, comment=""):
        path = tmp_path / name
        lines = [str(len(rows)), comment] + [f"{s} {x} {y} {z}" for s, x, y, z in rows]
        path.write_text("\n".join(lines) + "\n")
        return path

    return _write


@pytest.fixture(autouse=True, scope="session")
def _density_cache(tmp_path_factory):
    """Densities evaluated from orbital records are cached in a temporary folder, never in ~/.cache."""
    import os

    old = os.environ.get("RHOSR_CACHE")
    os.environ["RHOSR_CACHE"] = str(tmp_path_factory.mktemp("rhosr-cache"))
    yield
    if old is None:
        os.environ.pop("RHOSR_CACHE", None)
    else:
        os.environ["RHOSR_CACHE"] = old

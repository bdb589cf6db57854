"""rhosr: electron densities at DFT quality from a 3D super-resolution network.

The public API; importing it loads neither torch nor PySCF (``predict`` loads torch on
first use).  The layout and its dependency rule: docs/architecture.md.
"""

from rhosr._version import __version__
from rhosr.core.density import Density, read_density, write_density
from rhosr.core.grid import Grid, box_for
from rhosr.core.molecule import Molecule
from rhosr.core.sources import load_molecule, load_molecules
from rhosr.errors import InputError

__all__ = [
    "__version__",
    "InputError",
    "Molecule",
    "load_molecule",
    "load_molecules",
    "Grid",
    "box_for",
    "Density",
    "read_density",
    "write_density",
    "predict",
]


def __getattr__(name):
    # rhosr.predict: imported on first use, so that `import rhosr` stays free of torch
    if name == "predict":
        from rhosr.inference.predict import predict

        return predict
    raise AttributeError(f"module 'rhosr' has no attribute {name!r}")

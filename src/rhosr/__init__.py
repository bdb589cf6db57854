"""rhosr: electron densities at DFT quality from a 3D super-resolution network."""

from rhosr._version import __version__  # noqa: E402
from rhosr.core.density import Density, read_density, write_density  # noqa: E402
from rhosr.core.grid import Grid, box_for  # noqa: E402
from rhosr.core.molecule import Molecule  # noqa: E402
from rhosr.core.sources import load_molecule, load_molecules
from rhosr.errors import InputError
from rhosr.inference.predict import predict  # noqa: E402

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

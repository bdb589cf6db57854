"""The `rhosr` command: help, bad input, and the store commands end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from rhosr.cli.main import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("predict", "plot", "sad", "generate", "export", "info", "train", "evaluate"):
        assert cmd in text


def test_python_m_rhosr_and_one_line_error(tmp_path):
    out = tmp_path / "x.cube"
    res = subprocess.run([sys.executable, "-m", "rhosr", "sad", "qm9:58", "-o", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "qm9:58" in res.stderr and not out.exists()


BAD_FILES = {
    "malformed.xyz": "3\n\nC 0 0 zz\n",
    "empty.xyz": "",
    "unknown.xyz": "2\n\nXx 0 0 0\nH 0 0 1\n",
    "iron.xyz": "1\n\nFe 0 0 0\n",
    "nan.xyz": "2\n\nC nan 0 0\nH 0 0 1\n",
    "inf.xyz": "2\n\nC 0 inf 0\nH 0 0 1\n",
    "close.xyz": "2\n\nC 0 0 0\nH 0 0 0.3\n",
    "junk.pdb": "this is not a structure\n",
}


@pytest.mark.parametrize("command", ["sad", "generate"])
@pytest.mark.parametrize("case", list(BAD_FILES) + ["spin", "voxels", "smiles", "qm9"])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, capsys, command, case):
    extra = []
    if case in BAD_FILES:
        path = tmp_path / case
        path.write_text(BAD_FILES[case])
        source = str(path)
    else:
        source = {"spin": "qm9:1", "voxels": "qm9:1", "smiles": "smiles:C1CC(", "qm9": "qm9:61"}[case]
        extra = {"spin": ["--spin", "1"], "voxels": ["--max-voxels", "5000"]}.get(case, [])
    out = tmp_path / "out"
    argv = [command, source, *extra] + (["-o", str(out)] if command == "sad" else ["--out", str(out)])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rhosr {command}: error:") and "\n" not in err
    assert not out.exists()


def test_sad_command_cube_and_npy(tmp_path, capsys):
    from ase.io.cube import read_cube_data

    from rhosr.core.units import BOHR

    cube = tmp_path / "m.cube"
    assert main(["sad", "qm9:1", "-o", str(cube)]) == 0
    data, atoms = read_cube_data(str(cube))
    assert data.shape == (34, 33, 35)  # coarse mesh of methane
    dv = np.prod(atoms.cell.lengths() / BOHR / np.array(data.shape))
    assert data.sum() * dv == pytest.approx(8.0, rel=1e-4)
    npy = tmp_path / "m.sad.npy"
    assert main(["sad", "qm9:1", "-o", str(npy), "--format", "npy", "--mesh", "fine"]) == 0
    assert np.load(npy).shape == (68, 66, 70)
    info = json.loads((tmp_path / "m.json").read_text())
    assert info["mesh"] == [68, 66, 70] and info["electrons"] == pytest.approx(8.0, rel=1e-4)
    # several inputs: a directory of <id>.sad.<ext>
    folder = tmp_path / "many"
    assert main(["sad", "qm9:1-2", "-o", str(folder), "--format", "npy"]) == 0
    assert sorted(p.name for p in folder.glob("*.npy")) == ["qm9_000001.sad.npy", "qm9_000002.sad.npy"]


def test_generate_export_info(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["generate", "smiles:[H][H]", "smiles:O", "--out", str(store), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "done 2, failed 0" in text
    out = tmp_path / "export"
    assert main(["export", str(store), "--out", str(out), "--format", "npy"]) == 0
    names = sorted(p.name for p in out.iterdir())
    water = [n for n in names if n.endswith(".json")]
    assert len(water) == 2 and len(names) == 6
    for js in water:
        info = json.loads((out / js).read_text())
        for key in ("energy_hartree", "charge", "spin", "fine_mesh", "coarse_mesh", "cell_bohr",
                    "converged", "scf_iterations", "seconds"):
            assert key in info
        stem = js[:-5]
        dft = np.load(out / f"{stem}.dft.npy")
        sad = np.load(out / f"{stem}.sad.npy")
        assert list(dft.shape) == info["fine_mesh"] and list(sad.shape) == info["coarse_mesh"]
        dv_fine = np.prod(np.array(info["cell_bohr"]) / np.array(info["fine_mesh"]))
        dv_coarse = dv_fine * 8
        assert dft.sum() * dv_fine == pytest.approx(sad.sum() * dv_coarse, rel=1e-3)
    cube_out = tmp_path / "cubes"
    assert main(["export", str(store), "--out", str(cube_out), "--format", "cube", "--ids", stem]) == 0
    assert (cube_out / f"{stem}.dft.cube").is_file()
    assert main(["export", str(store), "--out", str(cube_out), "--ids", "nope"]) == 2
    capsys.readouterr()
    assert main(["info", str(store)]) == 0
    text = capsys.readouterr().out
    assert "records" in text and " 2" in text and "PBE" in text.upper()
    assert main(["info", str(tmp_path / "nothing")]) == 2


def test_closed_pipe_ends_quietly(monkeypatch, capsys):
    """`rhosr info default | head -1`: the reader closes the pipe; no traceback, status 141."""
    import io

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["info", "default"]) == 141
    assert "Traceback" not in capsys.readouterr().err

"""rhosr view (one offline HTML page in 3D), rhosr predict --html and rhosr plot --deformation,
used as a person would: the page opened in headless Chromium, its buttons clicked, the pixels
of the screenshot read.

The browser test runs wherever Chromium is installed (``.ci/run`` installs it); it is skipped
only when Chromium is absent outside CI (``CI`` unset), and fails in CI.
"""

import base64
import json
import os
import re
import time
import zlib
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from browser import Browser, chromium_path
from matplotlib.colors import rgb_to_hsv

from rhosr.cli.main import main
from rhosr.core.density import Density, read_density
from rhosr.core.grid import box_for
from rhosr.core.sad import sad_density
from rhosr.core.sources import load_molecule
from rhosr.core.units import BOHR
from rhosr.errors import InputError
from rhosr.viz.deformation import deformation_values, plane_of
from rhosr.viz.view import FLOOR_FRACTION, LIBRARY_VERSION, MODES, view_entry, view_page, write_page

DATA = Path(__file__).parent / "data"


def _run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Methane and ammonia: their DFT densities (h5) and methane predicted by the bundled
    model (a cube, as `rhosr predict` writes it)."""
    d = tmp_path_factory.mktemp("view")
    for index in (1, 2):
        mol = load_molecule(str(DATA / f"qm9_00000{index}.xyz"))
        _, fine, pos = box_for(mol.positions)
        rho = np.load(DATA / f"qm9_00000{index}_dft.npz")["rho_dft"].astype(np.float64)
        Density(rho, fine, tuple(mol.symbols), pos, 0, {"id": mol.id}).write(d / f"{mol.id}.dft.h5")
    assert main(["predict", str(DATA / "qm9_000001.xyz"), "-o", str(d / "qm9_000001.cube"),
                 "--device", "cpu", "--no-progress"]) == 0
    return d


def page_data(path) -> tuple[str, dict]:
    text = Path(path).read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="rhosr-data">(.*?)</script>', text, re.S)
    return text, json.loads(found.group(1))


def field(entry, key) -> np.ndarray:
    raw = zlib.decompress(base64.b64decode(entry["fields"][key]))
    return np.frombuffer(raw, "<f2").astype(np.float64).reshape(entry["grid"]["size"])


def floor(key) -> float:
    return FLOOR_FRACTION * next(m for m in MODES if m["key"] == key)["range"][0]


def close_in_float16(sent, values, key):
    """``sent`` is ``values`` in float16, with values under the field's floor sent as 0."""
    expected = np.where(np.abs(values) < floor(key), 0.0, values)
    return np.allclose(sent, expected, rtol=1e-3, atol=1e-7)


# ---------------------------------------------------------------- the page's content


def test_page_holds_the_density_deformation_and_error(files, tmp_path, capsys):
    page = tmp_path / "methane.html"
    rc, out, err = _run(capsys, "view", files / "qm9_000001.cube", "--reference",
                        files / "qm9_000001.dft.h5", "-o", page)
    assert rc == 0, err
    pred, ref = read_density(files / "qm9_000001.cube"), read_density(files / "qm9_000001.dft.h5")
    nmae = 100 * pred.nmae(ref)
    assert f"NMAE {nmae:.3f} %" in out and f"-> {page}" in out
    text, data = page_data(page)
    # offline: a policy that forbids every request, nothing loaded from elsewhere, 3Dmol inlined
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert not re.search(r"<(script|link|img|iframe|source)\b[^>]*\b(src|href)\s*=", text, re.I)
    assert f"3dmol v{LIBRARY_VERSION}" in text and "BSD-3-Clause" in text
    assert "Redistribution and use in source and binary forms" in text  # the licence travels along
    assert page.stat().st_size < 1_000_000
    (entry,) = data["molecules"]
    assert set(entry["fields"]) == {"density", "deformation", "error"}
    assert entry["nmae_percent"] == pytest.approx(nmae)
    assert [m["key"] for m in data["modes"]] == ["density", "deformation", "error", "none"]
    assert data["modes"][0]["default"] == 0.05
    # the fields on the coarse mesh (every second point), as float16
    rho = pred.values[::2, ::2, ::2]
    assert entry["grid"]["size"] == list(rho.shape)
    assert np.allclose(entry["grid"]["unit"], 2 * pred.grid.spacing * BOHR)
    coarse = pred.grid.coarsen()
    sad = sad_density(pred.symbols, pred.positions, coarse, charge=0)
    assert close_in_float16(field(entry, "density"), rho, "density")
    assert close_in_float16(field(entry, "deformation"), rho - sad, "deformation")
    assert close_in_float16(field(entry, "error"), rho - ref.values[::2, ::2, ::2], "error")
    # the atoms in Å, in the frame of the mesh
    lines = entry["xyz"].splitlines()
    assert lines[0] == "5" and [ln.split()[0] for ln in lines[2:]] == list(pred.symbols)
    xyz = np.array([[float(x) for x in ln.split()[1:]] for ln in lines[2:]])
    assert np.allclose(xyz, pred.positions * BOHR, atol=1e-4)


def test_several_inputs_one_page_with_a_selector(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run(capsys, "view", files / "qm9_000001.dft.h5", files / "qm9_000002.dft.h5")
    assert rc == 0, err
    text, data = page_data(tmp_path / "view.html")  # the default name for several
    assert [m["title"] for m in data["molecules"]] == ["qm9_000001", "qm9_000002"]
    assert all(set(m["fields"]) == {"density", "deformation"} for m in data["molecules"])
    assert 'id="molecule"' in text


def test_an_ion_and_predict_html(tmp_path, capsys):
    rc, out, err = _run(capsys, "view", "smiles:[NH4+]", "-o", tmp_path / "ion.html", "--device", "cpu")
    assert rc == 0, err
    _, data = page_data(tmp_path / "ion.html")
    (entry,) = data["molecules"]
    assert entry["title"] == "smiles:[NH4+] (charge +1)"
    # rho - SAD moves electrons, it does not add any: both hold 9 - 1 valence electrons (a SAD of the
    # neutral molecule would leave one electron; what is sent lacks the values under the floor)
    dv = float(np.prod(entry["grid"]["unit"])) / BOHR**3
    assert abs(field(entry, "deformation").sum() * dv) < 0.2
    assert field(entry, "density").sum() * dv == pytest.approx(8.0, rel=0.03)
    rc, out, err = _run(capsys, "predict", DATA / "qm9_000002.xyz", "-o", tmp_path / "nh3.cube",
                        "--html", "--device", "cpu")
    assert rc == 0, err
    assert "nh3.html" in out
    _, data = page_data(tmp_path / "nh3.html")
    assert data["molecules"][0]["title"] == "qm9_000002"


def test_page_api_refuses_nothing_and_a_bad_isovalue(files):
    with pytest.raises(InputError):
        view_page([])
    entry = view_entry(read_density(files / "qm9_000001.dft.h5"))
    with pytest.raises(InputError, match="isovalue"):
        view_page([entry], isovalue=3.0)
    assert view_page([entry], isovalue=0.1).count("</html>") == 1


# ---------------------------------------------------------------- bad input


def _shifted(files, tmp_path):
    d = read_density(files / "qm9_000001.dft.h5")
    d.positions = d.positions + np.asarray(d.grid.cell) * [1.5, 0, 0]
    return d.write(tmp_path / "shifted.h5")


def _scaled(files, tmp_path):
    d = read_density(files / "qm9_000001.dft.h5")
    d.values = d.values * 1.3  # 10.4 electrons: no whole charge of CH4
    return d.write(tmp_path / "scaled.h5")


@pytest.mark.parametrize("case", ["atoms outside the mesh", "wrong electron count", "reference mesh",
                                  "empty selection", "no such directory", "output is a directory",
                                  "parent is a file", "no such input", "isovalue"])
def test_bad_input_exit_2_one_line_nothing_written(files, tmp_path, capsys, case):
    pred = files / "qm9_000001.cube"
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "page.html"
    argv = {
        "atoms outside the mesh": lambda: [_shifted(files, tmp_path), "-o", out],
        "wrong electron count": lambda: [_scaled(files, tmp_path), "-o", out],
        "reference mesh": lambda: [pred, "--reference", files / "qm9_000002.dft.h5", "-o", out],
        "empty selection": lambda: ["qm9:5-4", "-o", out],
        "no such directory": lambda: [pred, "-o", tmp_path / "missing" / "page.html"],
        "output is a directory": lambda: [pred, "-o", tmp_path],
        "parent is a file": lambda: [pred, "-o", tmp_path / "a_file" / "page.html"],
        "no such input": lambda: [tmp_path / "missing.cube", "-o", out],
        "isovalue": lambda: [pred, "--isovalue", "7", "-o", out],
    }[case]()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, stdout, err = _run(capsys, "view", *argv)
    assert rc == 2
    assert err.startswith("rhosr view: error:") and err.strip().count("\n") == 0, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    if case in ("atoms outside the mesh", "wrong electron count"):
        assert "does not fit the structure" in err


# ---------------------------------------------------------------- rhosr plot --deformation


def test_plane_of_three_atoms_and_best_fit():
    pos = np.array([[0.0, 0, 0], [2, 0, 0], [0, 3, 0], [1, 1, 0.1], [5, 5, -0.1]])
    origin, u, v, n = plane_of(pos, [0, 1, 2])
    assert np.allclose(np.abs(n), [0, 0, 1]) and np.allclose(u, [1, 0, 0])
    assert np.allclose(np.cross(n, u), v) and np.allclose((pos[:3] - origin) @ n, 0)
    origin, u, v, n = plane_of(pos)  # best fit: the nearly planar set's normal is z
    assert abs(n[2]) > 0.99 and np.allclose(origin, pos.mean(axis=0))
    with pytest.raises(InputError, match="one line"):
        plane_of(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), [0, 1, 2])
    with pytest.raises(InputError, match="no such atom"):
        plane_of(pos, [0, 1, 7])
    with pytest.raises(InputError, match="three different"):
        plane_of(pos, [0, 1, 1])


def test_deformation_moves_electrons_without_adding_any(files):
    dft = read_density(files / "qm9_000002.dft.h5")
    deform = deformation_values(dft)
    assert abs(dft.grid.integrate(deform)) < 1e-3
    assert deform.max() > 0.02 and deform.min() < -0.02  # bonding moved some


def _colour_pixels(png) -> tuple[int, int]:
    """Pixels of the gain (red) and loss (blue) contour colours in a PNG."""
    hsv = rgb_to_hsv(matplotlib.image.imread(png)[..., :3])
    hue, strong = hsv[..., 0] * 360, (hsv[..., 1] > 0.4) & (hsv[..., 2] > 0.3)
    red = strong & ((hue < 15) | (hue > 345))
    blue = strong & (hue > 200) & (hue < 225)
    return int(red.sum()), int(blue.sum())


def test_plot_deformation(files, tmp_path, capsys):
    pred, ref = files / "qm9_000001.cube", files / "qm9_000001.dft.h5"
    rc, out, err = _run(capsys, "plot", "--deformation", pred, "--reference", ref, "-o", tmp_path / "d.png")
    assert rc == 0, err
    img = matplotlib.image.imread(tmp_path / "d.png")
    assert img.shape[1] > 2.5 * img.shape[0]  # three panels: rho - SAD, rho_ref - SAD, rho - rho_ref
    red, blue = _colour_pixels(tmp_path / "d.png")
    assert red > 500 and blue > 200  # gain and loss contours are drawn
    nh3 = tmp_path / "nh3.h5"
    nh3.write_bytes((files / "qm9_000002.dft.h5").read_bytes())
    rc, out, err = _run(capsys, "plot", "--deformation", nh3, "--atoms", "1", "2", "3")
    assert rc == 0, err
    assert (tmp_path / "nh3.deformation.png").exists()  # the default name, beside the file


@pytest.mark.parametrize("case", ["same atom twice", "no such atom", "atoms without deformation",
                                  "atoms outside the mesh"])
def test_plot_deformation_bad_input(files, tmp_path, capsys, case):
    dft = files / "qm9_000001.dft.h5"
    argv = {"same atom twice": [dft, "--deformation", "--atoms", "1", "2", "2"],
            "no such atom": [dft, "--deformation", "--atoms", "1", "2", "6"],
            "atoms without deformation": [dft, "--atoms", "1", "2", "3"],
            "atoms outside the mesh": [_shifted(files, tmp_path), "--deformation"]}[case]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, stdout, err = _run(capsys, "plot", *argv, "-o", tmp_path / "d.png")
    assert rc == 2 and err.startswith("rhosr plot: error:") and err.strip().count("\n") == 0, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# ---------------------------------------------------------------- in a browser

#: Hue windows (degrees) of the surface colours of rhosr.viz.view.MODES.
HUES = {"yellow": (35, 60), "red": (-15, 15), "blue": (200, 225), "green": (150, 175),
        "purple": (270, 300)}


def need_chromium():
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")


def colours(img) -> dict:
    """Pixels per surface colour, and all pixels that are not white, of a screenshot."""
    hsv = rgb_to_hsv(img[..., :3])
    hue = hsv[..., 0] * 360
    hue = np.where(hue > 345, hue - 360, hue)
    strong = (hsv[..., 1] > 0.3) & (hsv[..., 2] > 0.15)
    out = {k: int(np.sum(strong & (hue >= lo) & (hue <= hi))) for k, (lo, hi) in HUES.items()}
    out["not white"] = int(np.sum(img[..., :3].min(axis=-1) < 0.9))
    return out


def test_network_requests_are_seen(tmp_path):
    """The harness catches a page that fetches something (the check below means something)."""
    need_chromium()
    page = tmp_path / "leaky.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://192.0.2.1/x.png">'
                    '<script>document.body.dataset.state = "drawn";</script></body></html>')
    with Browser() as b:
        b.open(page.as_uri())
        b.wait_for("document.body && document.body.dataset.state === 'drawn'")
        time.sleep(0.5)
    assert any(url.startswith("http://192.0.2.1/") for url in b.requests)


def test_page_in_a_browser(files, tmp_path):
    need_chromium()
    pred = read_density(files / "qm9_000001.cube")
    entries = [view_entry(pred, read_density(files / "qm9_000001.dft.h5"), title="methane"),
               view_entry(read_density(files / "qm9_000002.dft.h5"), title="ammonia")]
    page = write_page(tmp_path / "page.html", view_page(entries))
    url = page.as_uri()

    def shown(b, mode, mol=0):
        b.wait_for(f"document.body.dataset.state === 'drawn' && document.body.dataset.mode === '{mode}'"
                   f" && document.body.dataset.mol === '{mol}'")
        r = json.loads(b.evaluate("JSON.stringify(document.getElementById('viewer')"
                                  ".getBoundingClientRect())"))
        img = b.screenshot(tmp_path / f"{mode}{mol}.png")
        top, bottom = int(r["y"]) + 2, int(r["y"] + r["height"]) - 2
        return colours(img[top:bottom, int(r["x"]):int(r["x"] + r["width"])])

    def slide(b, position):
        """Move the isovalue slider (0..1000) and wait for the surfaces drawn at the new value."""
        old = b.evaluate("location.hash")
        b.evaluate(f"(function(){{var s = document.getElementById('iso'); s.value = {position};"
                   " s.dispatchEvent(new Event('input'));})()")
        b.wait_for(f"location.hash !== {json.dumps(old)} && document.body.dataset.state === 'drawn'")

    with Browser() as b:
        b.open(url)
        seen = shown(b, "density")  # opens on the density at 0.05: atoms and a yellow surface
        assert seen["yellow"] > 2000 and seen["not white"] > seen["yellow"]
        assert "NMAE" in b.evaluate("document.title")
        b.click("#mode-deformation")  # gain and loss, no density surface
        seen = shown(b, "deformation")
        assert seen["red"] > 1000 and seen["blue"] > 30 and seen["yellow"] < 20
        b.click("#mode-error")  # where the prediction is wrong: too much (green), too little (purple)
        seen = shown(b, "error")
        assert seen["green"] > 200 and seen["red"] + seen["yellow"] < 20
        slide(b, 259)  # 0.0005 e/bohr^3 on the slider of the error (log scale 1e-4 .. 0.05)
        seen = shown(b, "error")
        assert seen["green"] > 200 and seen["purple"] > 200
        b.click("#mode-none")  # atoms only: the molecule is drawn, no surface
        seen = shown(b, "none")
        assert seen["not white"] > 1000
        assert max(seen[k] for k in HUES) < 20
        b.click("#mode-density")  # the slider: a lower isovalue draws a larger surface
        before = shown(b, "density")["yellow"]
        slide(b, 250)  # 0.0095 e/bohr^3 (log scale 0.002 .. 1)
        assert shown(b, "density")["yellow"] > 1.3 * before
        b.evaluate("(function(){var s=document.getElementById('molecule'); s.value='1';"
                   " s.dispatchEvent(new Event('change'));})()")  # the selector
        seen = shown(b, "density", mol=1)
        assert seen["yellow"] > 1000 and "ammonia" in b.evaluate("document.title")
        assert b.evaluate("document.getElementById('mode-error').disabled") is True
        b.open("about:blank")
        b.open(url + "#mol=0&surface=deformation&iso=0.02")  # the state in the address
        seen = shown(b, "deformation")
        assert "0.020" in b.evaluate("document.getElementById('iso-text').textContent")
    assert b.problems == []
    assert {u for u in b.requests if u != "about:blank"} == {url}  # the page itself, nothing else

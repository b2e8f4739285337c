"""The distribution: sdist complete, wheel ships the npe2 manifest, core imports light."""

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """Build the sdist, then the wheel *from the sdist* (what `python -m build` does)."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", str(out), str(ROOT))
    return next(out.glob("*.tar.gz")), next(out.glob("*.whl"))


def test_sdist_is_complete(dists):
    sdist, _ = dists
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        manifest = tar.extractfile(next(m for m in tar.getmembers()
                                        if m.name.endswith("/napari.yaml")
                                        and m.name.count("/") == 1))
        assert manifest.read() == (ROOT / "napari.yaml").read_bytes()
    for required in ("napari.yaml", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in",
                     "src/napari_precomputed/napari.yaml",
                     "src/napari_precomputed/precomputed_io.py",
                     "tests/conftest.py", "tests/test_packaging.py"):
        assert required in names, required


def test_wheel_ships_the_manifest(dists):
    _, wheel = dists
    with zipfile.ZipFile(wheel) as whl:
        assert whl.read("napari_precomputed/napari.yaml") == (ROOT / "napari.yaml").read_bytes()
        entry_points = next(n for n in whl.namelist() if n.endswith("entry_points.txt"))
        text = whl.read(entry_points).decode()
        metadata = whl.read(next(n for n in whl.namelist() if n.endswith("METADATA"))).decode()
        shipped = set(whl.namelist())
    # Subpackages too, not only the top-level modules.
    assert {f"napari_precomputed/compressed_segmentation/{name}.py"
            for name in ("__init__", "_blocks", "_encode", "_decode")} <= shipped
    assert "[napari.manifest]" in text
    assert "napari-precomputed = napari_precomputed:napari.yaml" in text
    assert "Classifier: Framework :: napari" in metadata
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "Requires-Python: >=3.11" in metadata
    assert not any(line.startswith("Requires-Dist: pyqt") and "extra" not in line
                   for line in metadata.lower().splitlines())


def test_npe2_validates_a_plain_install_in_a_fresh_venv(dists, tmp_path):
    _, wheel = dists
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", str(venv))
    python = venv / "bin" / "python"
    _run(str(python), "-m", "pip", "install", "-q", str(wheel))
    result = _run(str(venv / "bin" / "npe2"), "validate", "napari-precomputed")
    assert "valid" in (result.stdout + result.stderr).lower()


def test_importing_the_core_imports_no_gui():
    code = ("import sys; import napari_precomputed.precomputed_io, "
            "napari_precomputed.chunk_encoding, napari_precomputed.accessor, "
            "napari_precomputed.volume; "
            "bad = [m for m in ('napari', 'qtpy', 'magicgui', 'PyQt6', 'PyQt5', 'PySide6', "
            "'dask') if m in sys.modules]; print(bad); assert not bad")
    _run(sys.executable, "-c", code)

import sys
import threading

import numpy as np
import pytest

from napari_precomputed import small_pages
from napari_precomputed.volume import PREFAULT_BYTES


def _vma_flags(address):
    """The VmFlags of the mapping holding ``address`` (Linux), or None."""
    try:
        with open("/proc/self/smaps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    inside = False
    for line in lines:
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= address < hi
        elif inside and line.startswith("VmFlags:"):
            return line.split()[1:]
    return None


@pytest.mark.parametrize("shape", [(3, 4), (1, 16, 256, 256)])
def test_zeros_is_numpy_zeros(shape):
    out = small_pages.zeros(shape, np.uint64)
    assert out.shape == shape and out.dtype == np.uint64
    assert out.flags.owndata and out.flags.writeable
    assert not out.any()
    out[...] = 7
    assert (out == 7).all()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux page hints")
def test_large_zeros_withdraw_the_huge_page_hint():
    out = small_pages.zeros((small_pages.HINTED_BYTES * 4,), np.uint8)
    flags = _vma_flags(out.ctypes.data + small_pages.HINTED_BYTES)
    if flags is None:
        pytest.skip("no /proc/self/smaps")
    assert "hg" not in flags  # MADV_HUGEPAGE, which NumPy sets
    assert "nh" in flags  # MADV_NOHUGEPAGE


def test_prefault_leaves_the_array_alone_and_stops_its_thread():
    out = small_pages.zeros((PREFAULT_BYTES // 8,), np.uint64)
    before = threading.active_count()
    with small_pages.Prefault(out):
        out[:1000] = 5
    assert threading.active_count() == before
    assert (out[:1000] == 5).all() and not out[1000:].any()


def test_prefault_ignores_strided_arrays():
    base = np.zeros(1 << 20, dtype=np.uint8)
    with small_pages.Prefault(base[::2]) as prefault:
        assert prefault._thread is None


def test_large_segmentation_read_prefaults_and_equals_the_volume(new_dataset, monkeypatch):
    from conftest import label_volume

    from napari_precomputed import volume as volume_module

    used = []
    real = small_pages.Prefault

    class Spy(real):
        def __enter__(self):
            used.append(self)
            return super().__enter__()

    monkeypatch.setattr(volume_module, "PREFAULT_BYTES", 1 << 16)
    monkeypatch.setattr(volume_module, "Prefault", Spy)
    labels = label_volume((1, 20, 50, 70), np.uint64)
    io, _ = new_dataset(labels, encoding="compressed_segmentation", chunk_size=(32, 32, 16),
                        compressed_segmentation_block_size=[8, 8, 4])
    got = volume_module.read_region(io, "s0", (0, 0, 0), (70, 50, 20))
    np.testing.assert_array_equal(got, labels)
    assert len(used) == 1 and used[0]._thread is not None or not sys.platform.startswith("linux")

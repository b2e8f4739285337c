"""Pillow encoding through a scratch file: the same bytes, and safe in threads."""

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from napari_precomputed import image_bytes
from napari_precomputed.image_bytes import save_to_bytes


def _pillow_bytes(image, **params):
    out = io.BytesIO()
    image.save(out, **params)
    return out.getvalue()


@pytest.mark.parametrize("params", [
    dict(format="JPEG", quality=95, subsampling=0, restart_marker_rows=1),
    dict(format="JPEG", quality=20),
    dict(format="PNG", compress_level=6),
])
@pytest.mark.parametrize("mode_shape", [("L", (300, 70)), ("RGB", (40, 90, 3))])
def test_same_bytes_as_pillow_into_memory(params, mode_shape):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=mode_shape[1], dtype=np.uint8)
    image = Image.fromarray(pixels)
    # A large image first, so that the scratch file holds stale bytes past
    # the end of the smaller ones that follow.
    big = Image.fromarray(rng.integers(0, 256, size=(512, 512), dtype=np.uint8))
    assert save_to_bytes(big, **params) == _pillow_bytes(big, **params)
    assert save_to_bytes(image, **params) == _pillow_bytes(image, **params)


def test_threads_each_get_their_own_bytes():
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, size=(64, 64 * (i + 1)), dtype=np.uint8))
              for i in range(16)]
    params = dict(format="JPEG", quality=90)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda im: save_to_bytes(im, **params), images * 4))
    assert got == [_pillow_bytes(im, **params) for im in images * 4]


def test_falls_back_to_memory_without_memfd(monkeypatch):
    monkeypatch.delattr(os, "memfd_create", raising=False)
    monkeypatch.setattr(image_bytes, "_scratch", type(image_bytes._scratch)())
    image = Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    assert save_to_bytes(image, format="JPEG") == _pillow_bytes(image, format="JPEG")
    assert image_bytes._scratch.file is None

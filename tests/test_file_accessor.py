"""The local-folder accessor: names, layouts, gzip, and writes that never tear."""

import gzip
import os
import subprocess
import sys
import textwrap

import pytest

from napari_precomputed.accessor import get_accessor_for_url, split_precomputed_url
from napari_precomputed.errors import ChunkNotFoundError, DataAccessError
from napari_precomputed.file_accessor import FileAccessor

COORDS = (0, 4, -2, 0, 10, 11)


def test_flat_plain_files_by_default(tmp_path):
    acc = FileAccessor(tmp_path)
    acc.store_chunk(b"abcd", "8_8_8", COORDS)
    assert (tmp_path / "8_8_8" / "0-4_-2-0_10-11").read_bytes() == b"abcd"
    assert acc.fetch_chunk("8_8_8", COORDS) == b"abcd"


@pytest.mark.parametrize("name", ["0-4_-2-0_10-11.gz", "0-4/-2-0/10-11", "0-4/-2-0/10-11.gz"])
def test_reads_layouts_of_neuroglancer_scripts_and_cloud_volume(tmp_path, name):
    path = tmp_path / "s" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(b"xyz") if name.endswith(".gz") else b"xyz")
    assert FileAccessor(tmp_path).fetch_chunk("s", COORDS) == b"xyz"


def test_plain_file_wins_over_gz_and_is_never_sniffed(tmp_path):
    (tmp_path / "s").mkdir()
    # Raw data may start with the gzip magic; an un-suffixed file is taken as is.
    (tmp_path / "s" / "0-4_-2-0_10-11").write_bytes(b"\x1f\x8b plain")
    (tmp_path / "s" / "0-4_-2-0_10-11.gz").write_bytes(gzip.compress(b"stale"))
    assert FileAccessor(tmp_path).fetch_chunk("s", COORDS) == b"\x1f\x8b plain"


def test_gzip_writing_and_no_stale_variant(tmp_path):
    FileAccessor(tmp_path).store_chunk(b"old", "s", COORDS)
    acc = FileAccessor(tmp_path, gzip=True)
    acc.store_chunk(b"new" * 100, "s", COORDS)
    assert sorted(os.listdir(tmp_path / "s")) == ["0-4_-2-0_10-11.gz"]
    assert acc.fetch_chunk("s", COORDS) == b"new" * 100
    acc.store_chunk(b"\xff\xd8jpeg", "s", COORDS, mime_type="image/jpeg")
    assert sorted(os.listdir(tmp_path / "s")) == ["0-4_-2-0_10-11"]


def test_nested_writing(tmp_path):
    FileAccessor(tmp_path, flat=False).store_chunk(b"n", "s", COORDS)
    assert (tmp_path / "s" / "0-4" / "-2-0" / "10-11").read_bytes() == b"n"


def test_flat_write_removes_a_nested_variant_in_a_folder_it_did_not_make(tmp_path):
    FileAccessor(tmp_path, flat=False).store_chunk(b"old", "s", COORDS)
    acc = FileAccessor(tmp_path)
    acc.store_chunk(b"new", "s", COORDS)
    assert not (tmp_path / "s" / "0-4" / "-2-0" / "10-11").exists()
    assert acc.fetch_chunk("s", COORDS) == b"new"


def test_scale_folder_removed_between_writes_is_made_again(tmp_path):
    acc = FileAccessor(tmp_path)
    acc.store_chunk(b"a", "s", COORDS)
    (tmp_path / "s" / "0-4_-2-0_10-11").unlink()
    (tmp_path / "s").rmdir()
    acc.store_chunk(b"b", "s", COORDS)
    assert acc.fetch_chunk("s", COORDS) == b"b"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_written_files_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        acc = FileAccessor(tmp_path)
        acc.store_chunk(b"a", "s", COORDS)
        acc.store_file("info", b"{}")
    finally:
        os.umask(old)
    for path in (tmp_path / "s" / "0-4_-2-0_10-11", tmp_path / "info"):
        assert path.stat().st_mode & 0o777 == 0o644


def test_missing_chunk_and_file(tmp_path):
    acc = FileAccessor(tmp_path)
    with pytest.raises(ChunkNotFoundError, match="0-4_-2-0_10-11"):
        acc.fetch_chunk("s", COORDS)
    with pytest.raises(DataAccessError, match="info"):
        acc.fetch_file("info")


def test_store_file_refuses_to_overwrite(tmp_path):
    acc = FileAccessor(tmp_path)
    acc.store_file("info", b"{}")
    with pytest.raises(DataAccessError, match="already exists"):
        acc.store_file("info", b"[]")
    assert (tmp_path / "info").read_bytes() == b"{}"
    acc.store_file("info", b"[]", overwrite=True)
    assert (tmp_path / "info").read_bytes() == b"[]"


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    acc = FileAccessor(tmp_path)
    acc.store_chunk(b"good", "s", COORDS)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(DataAccessError, match="disk full"):
        acc.store_chunk(b"torn", "s", COORDS)
    assert os.listdir(tmp_path / "s") == ["0-4_-2-0_10-11"]
    assert acc.fetch_chunk("s", COORDS) == b"good"


def test_killed_writer_never_leaves_a_torn_chunk(tmp_path):
    """Kill a writer in the middle of writing 8 MB chunks: every chunk name holds all of it."""
    script = textwrap.dedent(f"""
        import os, sys
        from napari_precomputed.file_accessor import FileAccessor
        acc = FileAccessor({str(tmp_path)!r})
        buf = bytes(range(256)) * (8 * 4096)
        for i in range(10_000):
            acc.store_chunk(buf, "s", (i, i + 1, 0, 1, 0, 1))
            if i == 2:
                print("go", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"go"
    proc.kill()
    proc.wait()
    names = [n for n in os.listdir(tmp_path / "s") if not n.startswith(".")]
    assert len(names) >= 3
    expected = bytes(range(256)) * (8 * 4096)
    for name in names:
        assert (tmp_path / "s" / name).read_bytes() == expected


def test_corrupt_gz_file(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "0-4_-2-0_10-11.gz").write_bytes(gzip.compress(b"x" * 1000)[:-12])
    with pytest.raises(DataAccessError, match="0-4_-2-0_10-11.gz"):
        FileAccessor(tmp_path).fetch_chunk("s", COORDS)


@pytest.mark.parametrize("url", ["precomputed://file://{p}", "file://{p}", "{p}",
                                 "precomputed://{p}", "{p}/info"])
def test_url_forms(tmp_path, url):
    (tmp_path / "info").write_text("{}")
    acc = get_accessor_for_url(url.format(p=tmp_path))
    assert isinstance(acc, FileAccessor)
    assert acc.base_path == tmp_path


def test_unknown_scheme():
    assert split_precomputed_url("precomputed://gs://bucket/x") == ("gs", "gs://bucket/x")
    with pytest.raises(ValueError, match="gs"):
        get_accessor_for_url("precomputed://gs://bucket/x")


def test_escaping_paths_are_refused(tmp_path):
    (tmp_path / "secret").write_bytes(b"s")
    acc = FileAccessor(tmp_path / "ds")
    from napari_precomputed.errors import InvalidInfoError
    with pytest.raises(InvalidInfoError):
        acc.fetch_file("../secret")


@pytest.mark.parametrize("level", [-1, 10, 12, 2.5, "9", True])
def test_bad_compresslevel_is_refused_before_anything_is_written(tmp_path, level):
    with pytest.raises(ValueError, match="compresslevel"):
        get_accessor_for_url(str(tmp_path / "ds"), {"gzip": True, "compresslevel": level})
    assert not (tmp_path / "ds").exists()

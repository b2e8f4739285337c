"""Code written against neuroglancer-scripts runs after changing only the import."""

import argparse
import textwrap

import pytest

from napari_precomputed.chunk_encoding import add_argparse_options

REFERENCE_PROGRAM = textwrap.dedent('''
    import numpy as np
    from {pkg}.accessor import get_accessor_for_url, DataAccessError
    from {pkg}.chunk_encoding import (
        get_encoder, add_argparse_options, IncompatibleEncoderError,
        InvalidFormatError, InvalidInfoError, RawChunkEncoder, JpegChunkEncoder,
        CompressedSegmentationEncoder, ChunkEncoder)
    from {pkg}.precomputed_io import (
        get_IO_for_existing_dataset, get_IO_for_new_dataset)

    def run(path):
        info = {{"type": "segmentation", "data_type": "uint32", "num_channels": 1,
                "scales": [{{"key": "1mm", "size": [20, 10, 5], "resolution": [1e6] * 3,
                            "voxel_offset": [0, 0, 0], "chunk_sizes": [[8, 8, 8]],
                            "encoding": "compressed_segmentation",
                            "compressed_segmentation_block_size": [4, 4, 4]}}]}}
        accessor = get_accessor_for_url(path)
        io = get_IO_for_new_dataset(info, accessor)
        try:
            get_IO_for_new_dataset(info, accessor)
        except DataAccessError:
            pass
        else:
            raise SystemExit("info overwritten")
        chunk = np.arange(8 * 8 * 5, dtype=np.uint32).reshape(1, 5, 8, 8) % 7
        assert io.validate_chunk_coords("1mm", (0, 8, 0, 8, 0, 5))
        io.write_chunk(chunk, "1mm", (0, 8, 0, 8, 0, 5))
        io = get_IO_for_existing_dataset(get_accessor_for_url(path))
        assert io.info["scales"][0]["key"] == "1mm"
        assert io.scale_info("1mm")["size"] == [20, 10, 5]
        assert not io.scale_is_lossy("1mm")
        back = io.read_chunk("1mm", (0, 8, 0, 8, 0, 5))
        assert back.shape == (1, 5, 8, 8) and (back == chunk).all()
        try:
            io.read_chunk("1mm", (8, 16, 0, 8, 0, 5))
        except DataAccessError:
            pass
        else:
            raise SystemExit("missing chunk read")
        try:
            io.write_chunk(chunk, "1mm", (1, 9, 0, 8, 0, 5))
        except AssertionError:
            pass
        else:
            raise SystemExit("bad coordinates accepted")
        enc = get_encoder({{"data_type": "uint8", "num_channels": 3}},
                          {{"encoding": "jpeg"}}, {{"jpeg_quality": 90, "jpeg_plane": "xz"}})
        assert isinstance(enc, JpegChunkEncoder) and enc.lossy
        assert enc.mime_type == "image/jpeg"
        assert RawChunkEncoder.mime_type == "application/octet-stream"
        img = enc.decode(enc.encode(np.full((3, 2, 4, 4), 128, np.uint8)), (4, 4, 2))
        assert img.shape == (3, 2, 4, 4)
        try:
            JpegChunkEncoder("uint16", 1)
        except IncompatibleEncoderError:
            pass
        else:
            raise SystemExit("uint16 JPEG accepted")
        try:
            RawChunkEncoder("uint8", 1).decode(b"123", (2, 2, 1))
        except InvalidFormatError:
            pass
        else:
            raise SystemExit("short raw chunk decoded")
        for bad in ({{"data_type": "uint8", "num_channels": 1}}, {{"encoding": "nope"}}), \
                ({{"data_type": "int64", "num_channels": 1}}, {{"encoding": "raw"}}), \
                ({{"data_type": "uint16", "num_channels": 1}}, {{"encoding": "jpeg"}}):
            try:
                get_encoder(*bad)
            except InvalidInfoError:
                pass
            else:
                raise SystemExit(f"get_encoder accepted {{bad}}")
        cseg = CompressedSegmentationEncoder("uint64", 2, [8, 8, 8])
        assert isinstance(cseg, ChunkEncoder) and not cseg.lossy
        return "ok"
''')

def test_reference_program_runs_with_only_the_import_changed(tmp_path):
    namespace = {}
    exec(REFERENCE_PROGRAM.format(pkg="napari_precomputed"), namespace)
    assert namespace["run"](str(tmp_path / "ds")) == "ok"

def test_argparse_options_feed_get_encoder():
    from napari_precomputed.chunk_encoding import add_argparse_options, get_encoder

    parser = argparse.ArgumentParser()
    add_argparse_options(parser, allow_lossy=True)
    args = parser.parse_args(["--jpeg-quality", "80", "--jpeg-plane", "xz"])
    enc = get_encoder({"data_type": "uint8", "num_channels": 1}, {"encoding": "jpeg"},
                      vars(args))
    assert (enc.jpeg_quality, enc.jpeg_plane) == (80, "xz")
    parser = argparse.ArgumentParser()
    add_argparse_options(parser)
    assert not hasattr(parser.parse_args([]), "jpeg_quality")


def test_get_encoder_blames_the_info_for_what_its_encoding_cannot_hold():
    from napari_precomputed.chunk_encoding import (
        IncompatibleEncoderError,
        InvalidInfoError,
        get_encoder,
    )

    cases = [({"data_type": "int64", "num_channels": 1}, {"encoding": "raw"}),
             ({"data_type": "bool", "num_channels": 1}, {"encoding": "raw"}),
             ({"data_type": "uint8", "num_channels": 0}, {"encoding": "raw"}),
             ({"data_type": "uint8", "num_channels": None}, {"encoding": "raw"}),
             ({"data_type": "uint8", "num_channels": "1"}, {"encoding": "raw"}),
             ({"data_type": "uint16", "num_channels": 1}, {"encoding": "jpeg"}),
             ({"data_type": "uint8", "num_channels": 1},
              {"key": "s0", "encoding": "jpeg", "jpeg_quality": 101}),
             ({"data_type": "uint8", "num_channels": 1},
              {"key": "s0", "encoding": "png", "png_level": 12}),
             ({"data_type": "uint8", "num_channels": 1},
              {"key": "s0", "encoding": "png", "png_level": True})]
    for info, scale in cases:
        with pytest.raises(InvalidInfoError) as exc_info:
            get_encoder(info, scale)
        assert not isinstance(exc_info.value, (TypeError, ValueError))
        assert f"scale {scale.get('key')!r}" in str(exc_info.value)
    # The encoders themselves keep the reference's IncompatibleEncoderError.
    from napari_precomputed.chunk_encoding import RawChunkEncoder

    with pytest.raises(IncompatibleEncoderError):
        RawChunkEncoder("int64", 1)


def test_jpeg_quality_comes_from_options_then_the_scale_hint_then_95():
    from napari_precomputed.chunk_encoding import JpegChunkEncoder, get_encoder

    info = {"data_type": "uint8", "num_channels": 1}

    def quality(scale, options=None):
        return get_encoder(info, {"encoding": "jpeg", **scale}, options or {}).jpeg_quality

    assert quality({}) == 95
    assert quality({"jpeg_quality": 60}) == 60
    assert quality({"jpeg_quality": 60}, {"jpeg_quality": 80}) == 80
    # The format allows a hint of 0, which libjpeg treats as 1.
    assert quality({"jpeg_quality": 0}) == 1
    # Options are the caller's: out of range is a ValueError, not the info's fault.
    for bad in (0, 101, 9.5, True):
        with pytest.raises(ValueError):
            quality({}, {"jpeg_quality": bad})
        with pytest.raises(ValueError):
            JpegChunkEncoder("uint8", 1, jpeg_quality=bad)
    parser = argparse.ArgumentParser()
    add_argparse_options(parser, allow_lossy=True)
    assert quality({"jpeg_quality": 60}, vars(parser.parse_args([]))) == 60
    for bad in ("0", "101", "high"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--jpeg-quality", bad])

"""Code written against neuroglancer-scripts runs after changing only the import."""

import argparse
import textwrap

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
        try:
            RawChunkEncoder("uint8", 1).decode(b"123", (2, 2, 1))
        except InvalidFormatError:
            pass
        try:
            get_encoder({{"data_type": "uint8", "num_channels": 1}}, {{"encoding": "nope"}})
        except InvalidInfoError:
            pass
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

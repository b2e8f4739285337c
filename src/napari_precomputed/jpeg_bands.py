"""Cut a band of rows out of a JPEG that has restart markers, without decoding.

A jpeg chunk is one image whose rows are the chunk's (z, y) rows, so a plane
needs only 1/Z of the image. Entropy-coded JPEG data can only be decoded from
its start, except at restart markers (RSTn), where the decoder's state is
reset. napari-precomputed writes its JPEGs with a restart marker after every
row of MCUs; such an image can be cut at those markers into a smaller valid
JPEG holding just the rows wanted, which decodes in a fraction of the time.

Images without restart markers (as other tools write them), progressive ones,
ones with vertically subsampled colour, or otherwise unusual ones get None
from :func:`parse`, and are decoded whole.
"""

import struct

import numpy as np

__all__ = ["JpegLayout", "parse", "band"]

_SOI, _EOI, _SOS, _DRI = 0xD8, 0xD9, 0xDA, 0xDD
# Baseline and extended sequential Huffman frames: the only ones cut here.
_SEQUENTIAL_SOF = (0xC0, 0xC1)
_OTHER_SOF = frozenset(range(0xC2, 0xD0)) - {0xC4, 0xC8, 0xCC}


class JpegLayout:
    """Where the parts of a JPEG with restart markers are.

    :ivar int width: image width
    :ivar int height: image height
    :ivar int rows_per_interval: image rows between restart markers
    """

    def __init__(self, header, height_at, scan_start, scan_end, markers, width, height,
                 rows_per_interval):
        self.header = header
        self.height_at = height_at
        self.scan_start = scan_start
        self.scan_end = scan_end
        self.markers = markers
        self.width = width
        self.height = height
        self.rows_per_interval = rows_per_interval

    @property
    def intervals(self):
        return len(self.markers) + 1


def parse(buf):
    """Find the restart intervals of a sequential JPEG.

    :param bytes buf: a whole JPEG file
    :returns: a :class:`JpegLayout`, or None if the image cannot be cut into
        bands of whole MCU rows that decode as in the whole image (no
        restart markers, several scans, progressive, vertically subsampled
        colour, malformed)
    """
    try:
        return _parse(bytes(buf))
    except (IndexError, struct.error, ValueError):
        return None


def _parse(buf):
    if buf[:2] != b"\xff\xd8":
        return None
    pos, restart, sof = 2, 0, None
    while True:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack_from(">H", buf, pos + 2)[0]
        segment = pos + 4
        if marker in _SEQUENTIAL_SOF:
            height, width, ncomp = struct.unpack_from(">HHB", buf, segment + 1)
            factors = [buf[segment + 6 + 3 * i + 1] for i in range(ncomp)]
            vertical = {f & 15 for f in factors}
            if len(vertical) > 1:
                # Vertically subsampled colour (4:2:0) is upsampled from the
                # rows above and below, so a band's edge rows would differ
                # from the same rows decoded in the whole image.
                return None
            sof = (segment + 1, width, height, max(f >> 4 for f in factors),
                   vertical.pop())
        elif marker in _OTHER_SOF:
            return None
        elif marker == _DRI:
            restart = struct.unpack_from(">H", buf, segment)[0]
        elif marker == _SOS:
            scan_start = pos + 2 + length
            break
        elif marker in (_SOI, _EOI):
            return None
        pos += 2 + length
    if sof is None or not restart:
        return None
    height_at, width, height, h_max, v_max = sof
    if not height or not width:
        return None
    mcu_cols = -(-width // (8 * h_max))
    if restart % mcu_cols:
        return None  # intervals that end mid-row cannot be cut into rows
    scan = np.frombuffer(buf, dtype=np.uint8, offset=scan_start)
    ff = np.flatnonzero(scan[:-1] == 0xFF)
    following = scan[ff + 1]
    rst = ff[(following >= 0xD0) & (following <= 0xD7)]
    ends = ff[following == _EOI]
    if not ends.size or (rst.size and rst[-1] > ends[0]):
        return None  # a second scan, or garbage
    rows_per_interval = restart // mcu_cols * 8 * v_max
    if rst.size != -(-height // rows_per_interval) - 1:
        return None
    markers = rst + scan_start
    # Markers must come in the order RST0, RST1, ..., RST7, RST0, ...
    if np.any(scan[rst + 1] != 0xD0 + np.arange(rst.size) % 8):
        return None
    return JpegLayout(buf[:scan_start], height_at, scan_start, int(ends[0]) + scan_start,
                      markers, width, height, rows_per_interval)


def band(buf, layout, row_start, row_stop):
    """A smaller JPEG holding at least rows ``row_start`` to ``row_stop``.

    :param bytes buf: the JPEG that :func:`parse` described
    :param JpegLayout layout: what :func:`parse` returned for it
    :returns: ``(jpeg_bytes, first_row, rows)``: a JPEG of whole restart
        intervals, ``rows`` high, whose first row is row ``first_row`` of the
        image
    """
    rows = layout.rows_per_interval
    first, stop = row_start // rows, -(-row_stop // rows)
    first_row = first * rows
    height = min(stop * rows, layout.height) - first_row
    start = layout.scan_start if first == 0 else int(layout.markers[first - 1]) + 2
    end = layout.scan_end if stop == layout.intervals else int(layout.markers[stop - 1])
    scan = bytearray(buf[start:end])
    if first % 8:
        # The band's own markers must count from RST0 again.
        for k, at in enumerate(layout.markers[first:stop - 1]):
            scan[int(at) - start + 1] = 0xD0 + k % 8
    header = bytearray(layout.header)
    struct.pack_into(">H", header, layout.height_at, height)
    return bytes(header) + bytes(scan) + b"\xff\xd9", first_row, height

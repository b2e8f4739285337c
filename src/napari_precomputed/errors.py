"""Exceptions raised by the precomputed core.

The names and bases follow neuroglancer-scripts, so ``except`` clauses written
against that package keep working after changing the import.
"""


class DataAccessError(Exception):
    """Raised when a file of the dataset cannot be read or written."""


class IncompatibleEncoderError(Exception):
    """Raised when an Encoder cannot handle the requested data type."""


class InvalidFormatError(Exception):
    """Raised when chunk data cannot be decoded properly."""


class InvalidInfoError(Exception):
    """Raised when an info dict is invalid or inconsistent."""


class UnsupportedEncodingError(InvalidInfoError):
    """Raised for a valid dataset this package cannot read yet.

    ``compresso`` and ``jxl`` are valid Neuroglancer encodings, and sharded
    scales a valid storage layout; a dataset using them is not *invalid*, but
    it cannot be read here. Subclassing :class:`InvalidInfoError` keeps
    reference-style ``except`` clauses working.
    """


class ChunkNotFoundError(DataAccessError):
    """Raised when a chunk is not stored at all (as opposed to unreadable).

    The format treats an absent chunk as filled with zeros; readers that follow
    Neuroglancer catch this to substitute zeros, while code written against
    neuroglancer-scripts sees the :class:`DataAccessError` it expects.
    """


class InvalidChunkCoordsError(AssertionError, ValueError):
    """Raised when chunk coordinates do not match the dataset's chunk grid.

    neuroglancer-scripts signals this with an ``AssertionError``; deriving from
    it keeps such code working, and from ``ValueError`` because that is what
    it is.
    """

"""Open and export Neuroglancer precomputed volumes in napari.

The core modules (:mod:`~napari_precomputed.precomputed_io`,
:mod:`~napari_precomputed.chunk_encoding`, :mod:`~napari_precomputed.accessor`
and friends) depend on NumPy and Pillow only; the napari adapters live in the
private ``_reader``/``_writer``/``_widget`` modules. Importing this package
imports nothing else, so that napari starts fast.
"""

__version__ = "0.1.0"

"""``python -m napari_precomputed [PATH_OR_URL]``: open napari on a precomputed dataset.

Without an argument, napari opens on the plugin's synthetic sample dataset.
"""

import argparse


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m napari_precomputed",
        description="Open napari on a Neuroglancer precomputed dataset (default: a sample).")
    parser.add_argument("path", nargs="?",
                        help="dataset folder, its info file, or a precomputed:// URL")
    args = parser.parse_args(argv)

    import napari

    viewer = napari.Viewer(title="napari-precomputed")
    if args.path:
        viewer.open(args.path, plugin="napari-precomputed")
    else:
        viewer.open_sample("napari-precomputed", "synthetic_em")
    napari.run()


if __name__ == "__main__":
    main()

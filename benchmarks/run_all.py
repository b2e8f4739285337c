"""Run every benchmark and print its table: ``python benchmarks/run_all.py [--quick] [--repeat N]``.

``--quick`` uses fewer repeats and a 1 GiB instead of 8 GiB export volume.
Figures depend on the machine; each table compares against TensorStore or the
C++ compressed-segmentation codec measured in the same run.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=None,
                        help="pairs of runs per TensorStore comparison (default 3, 2 with --quick)")
    args = parser.parse_args(argv)
    repeat = args.repeat or (2 if args.quick else 3)

    import bench_compressed_segmentation
    import bench_export
    import bench_open
    import bench_volume

    print("== compressed_segmentation codec, 64^3 chunks, 8^3 blocks ==")
    bench_compressed_segmentation.main()
    print("\n== whole volumes and planes (core and lazy array) ==")
    size = (512, 512, 256)
    bench_volume.print_rows(bench_volume.run(size, repeat), size)
    print("\n== opening a 10^9-chunk dataset ==")
    bench_open.print_rows(bench_open.run())
    print("\n== export ==")
    rows = bench_export.bench_against_tensorstore(repeat=repeat)
    big = bench_export.bench_big(1.0 if args.quick else 8.0)
    bench_export.print_rows(rows, big)


if __name__ == "__main__":
    main()

"""`--threads N` for the benchmarks: limit OpenBLAS to N threads, which must happen before
numpy is imported (a steadier comparison on a busy machine). Import this module first."""
import os
import sys


def threads_from_argv() -> int | None:
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return None


THREADS = threads_from_argv()
if THREADS is not None:
    os.environ["OPENBLAS_NUM_THREADS"] = str(THREADS)

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


def add_threads_argument(parser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS and PyTorch threads (default: their own defaults)")


def report_environment() -> None:
    """Say which OpenBLAS kernel settings and thread count this run has."""
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    print(f"OpenBLAS overrides in the environment: {env or 'none (native kernel)'}; "
          f"threads: {THREADS or 'default'}")
    if env:
        print("  (run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` for the native kernel)")

"""Timing numpylm against a peer on a shared machine: alternating rounds.

Timing one side completely and then the other lets a slow spell of the machine fall on one
side only; alternating call by call is no better here, since numpy's and torch's BLAS
threads keep spinning for a while after their last call and slow the other library down.
So the sides take turns of several calls (a a a, b b b, a a a, ...), each turn after a
short pause, and each round gives one ratio of medians.
"""
import statistics
import time


def best_of(fn, repeats: int) -> float:
    """The fastest of `repeats` runs of `fn()`: the least disturbed by other work."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_time(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls, after two warm-up calls (first-touch
    page faults, BLAS thread start)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternating_rounds(fns, rounds: int, per_round: int, warmup: int = 2, settle: int = 1,
                       pause: float = 0.2) -> list[list[list[float]]]:
    """Seconds of each of `fns`, as [side][round] lists of `per_round` timings.

    Each side is first called `warmup` times; each turn starts after `pause` seconds with
    `settle` untimed calls."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[list[float]]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, store in zip(fns, times):
            time.sleep(pause)
            for _ in range(settle):
                fn()
            store.append([])
            for _ in range(per_round):
                start = time.perf_counter()
                fn()
                store[-1].append(time.perf_counter() - start)
    return times


def round_ratios(a: list[list[float]], b: list[list[float]]) -> list[float]:
    """median(a) / median(b) in each round."""
    return [statistics.median(x) / statistics.median(y) for x, y in zip(a, b)]


def all_times(side: list[list[float]]) -> list[float]:
    return [t for r in side for t in r]


def ratio_text(ratios, target: str | None = None) -> str:
    """How a benchmark reports its per-round ratios: '1.23x (median over 3 rounds, range
    1.10-1.40; target <= 1.0x)'."""
    ratios = [float(r) for r in ratios]
    aim = f"; target {target}" if target else ""
    return (f"{statistics.median(ratios):.2f}x (median over {len(ratios)} rounds, range "
            f"{min(ratios):.2f}-{max(ratios):.2f}{aim})")

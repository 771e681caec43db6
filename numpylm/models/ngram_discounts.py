"""How Kneser-Ney chooses its discounts: given by the user, or estimated from counts of counts.

Absolute discounting subtracts a fixed D from every seen count and hands the freed mass to
the lower order. Ney, Essen & Kneser (1994) estimate the best single D from n_c, the number
of distinct n-grams seen exactly c times:  D = n1 / (n1 + 2 n2).  Chen & Goodman (1998)
let the discount depend on the count (modified Kneser-Ney), with Y = n1 / (n1 + 2 n2):
    D1 = 1 - 2Y n2/n1,   D2 = 2 - 3Y n3/n2,   D3+ = 3 - 4Y n4/n3.
Each order gets its own discounts, from the counts used at that order (raw counts at the
highest order, continuation counts below). On sparse data some n_c is 0 and the estimate
breaks down; like KenLM's --discount_fallback we then use 0.5, or (0.5, 1.0, 1.5).

Discounts are stored as an (order, 3) array: the D for counts 1, 2 and >= 3 at each order
(three equal values for plain Kneser-Ney), so one formula serves both variants.
"""
from __future__ import annotations

import numpy as np

from numpylm.models.ngram_counts import OrderTable

KN_FALLBACK = (0.5, 0.5, 0.5)
MODIFIED_KN_FALLBACK = (0.5, 1.0, 1.5)


def parse_discounts(smoothing: str, value: object, order: int) -> np.ndarray | None:
    """User-given discounts as an (order, 3) array, or None to estimate them at fit time.

    kneser_ney: one D for every order, or one per order, each in (0, 1).
    modified_kneser_ney: one (D1, D2, D3+) triple, or one per order, with 0 < D_c < c
    (so that every discounted count stays positive).
    """
    if value is None:
        return None
    if smoothing == "kneser_ney":
        values = np.full(order, value, dtype=float) if np.ndim(value) == 0 else np.asarray(value, dtype=float)
        if values.shape != (order,):
            raise ValueError(f"discount must be one number or one per order ({order}), got {value!r}")
        for m, v in enumerate(values, 1):
            if not 0 < v < 1:
                raise ValueError(f"Kneser-Ney discount for order {m} must lie in (0, 1), got {v}")
        return np.repeat(values[:, None], 3, axis=1)
    values = np.asarray(value, dtype=float)
    if values.shape == (3,):
        values = np.tile(values, (order, 1))
    if values.shape != (order, 3):
        raise ValueError(f"discounts must be (D1, D2, D3+) or one such triple per order ({order}), got {value!r}")
    for m, row in enumerate(values, 1):
        for c, v in enumerate(row, 1):
            if not 0 < v < c:
                name = f"D{c}{'+' if c == 3 else ''}"
                raise ValueError(f"modified Kneser-Ney discount {name} for order {m} must lie in (0, {c}), got {v}")
    return values


def estimate_discounts(smoothing: str, tables: list[OrderTable]) -> tuple[np.ndarray, list[int]]:
    """(order, 3) discounts estimated per order, and the orders that fell back to defaults."""
    out = np.zeros((len(tables), 3))
    fallback = []
    for m, table in enumerate(tables, 1):
        n1, n2, n3, n4 = (table.count_of_counts(c) for c in (1, 2, 3, 4))
        if smoothing == "kneser_ney":
            ok = n1 > 0 and n2 > 0  # then 0 < D < 1 strictly
            out[m - 1] = (n1 / (n1 + 2 * n2),) * 3 if ok else KN_FALLBACK
        else:
            ok = min(n1, n2, n3, n4) > 0
            if ok:
                y = n1 / (n1 + 2 * n2)
                d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
                ok = all(0 < v < c for c, v in enumerate(d, 1))
            out[m - 1] = d if ok else MODIFIED_KN_FALLBACK
        if not ok:
            fallback.append(m)
    return out, fallback

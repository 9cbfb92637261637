"""The oracle pager: the fewest REST calls any pager could make to back-fill a hole through a paging API
that returns the newest ROWS trades at or before a whole second (the measure bench_gapfill compares the
gap-filler against; tests/test_gapfill_oracle.py checks it)."""

ROWS = 30


def oracle_calls(times_s: list[int], need_lo: int, need_hi: int) -> int:
    """Fewest pages (the newest 30 trades at or before a chosen second) that cover trades need_lo..need_hi
    (indices, oldest first) plus the trade before need_lo (the bracket that proves continuity).

    Greedy from the newest needed trade is optimal: a page must include it, and the page at its own
    second reaches furthest back (an earlier cursor leaves it out, a later one starts newer). Trades of a
    second holding more than 30 before the page's reach cannot be paged by anyone and are skipped."""
    calls = 0
    top = need_hi  # the newest index still needed
    target = max(need_lo - 1, 0)
    while top >= target:
        sec = times_s[top]
        end = top
        while end + 1 < len(times_s) and times_s[end + 1] == sec:
            end += 1  # the page at `sec` starts at the newest trade of that second
        oldest = end - ROWS + 1
        calls += 1
        if oldest <= target:
            break
        top = oldest - 1
        if times_s[oldest] == sec:  # the page ended inside `sec`: older trades of it are out of reach
            while top >= 0 and times_s[top] == sec:
                top -= 1
    return calls


__all__ = ["ROWS", "oracle_calls"]

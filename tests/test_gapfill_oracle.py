"""The bench's oracle pager (the 'minimum possible' calls for a one-second-cursor API) is right on
hand-checked cases and never loops on a second with more trades than one page."""

from tests.support.pager_oracle import ROWS, oracle_calls


def test_distinct_seconds_need_ceil_of_rows():
    times = list(range(200))
    assert oracle_calls(times, 1, 90) == 4  # 90 needed + the bracket = 91 rows = ceil(91/30)


def test_second_boundaries_known_to_the_oracle_cost_nothing():
    times = [i // 2 for i in range(60)]  # two trades a second
    assert oracle_calls(times, 1, 59) == 2  # pages end exactly on second boundaries


def test_a_page_ending_inside_a_second_forces_a_reread():
    times = [i // 7 for i in range(70)]  # seven a second: 30 rows end inside a second
    # page at sec 9 covers 40..69 (oldest 40 is sec 5, which starts at 35): the next page must be at
    # sec 5 again (35..39 not yet covered) and covers 10..39; a third reaches 0
    assert oracle_calls(times, 1, 69) == 3


def test_more_trades_in_one_second_than_a_page_terminates():
    times = [0] * 5 + [1] * (ROWS + 20) + [2] * 5
    assert oracle_calls(times, 1, len(times) - 1) == 3

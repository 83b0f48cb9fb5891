"""Error-localization metrics, on numbers small enough to count by hand."""

import pytest

from goalrm.localization import false_alarm_threshold, localization


def test_threshold_cuts_at_most_the_rate_of_chosen_completions():
    minima = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8, 0.6, 0.4, 0.0]  # 10 completions
    assert false_alarm_threshold(minima, 0.05) == 0.0  # floor(0.5) = rank 0: nothing lies below it
    assert false_alarm_threshold(minima, 0.2) == 0.2  # rank 2: 0.0 and 0.1 below, 2 of 10 = 20%
    assert false_alarm_threshold(minima, 0.25) == 0.2  # floor(2.5) = 2


def test_detection_delay_saved_tokens_and_auroc_by_hand():
    # 20 chosen completions: minima 0.30, 0.31, ..., 0.49; at 5% one of 20 may be cut: the threshold is 0.31
    chosen = [[0.9, 0.8, 0.3 + i / 100] for i in range(20)]
    rejected = [
        [0.9, 0.8, 0.7, 0.1, 0.1, 0.1],  # error at 2, cut at 3: detected 1 token late
        [0.9, 0.2, 0.9, 0.9],  # error at 3, cut at 1: an early alarm
        [0.9, 0.9, 0.9, 0.9, 0.9, 0.9],  # error at 0, never cut
    ] + [[0.5, 0.5]] * 17  # no known error: count for tokens saved and the threshold only
    first_error = [2, 3, 0] + [None] * 17
    m = localization(chosen, rejected, first_error)
    assert m["false_alarm_threshold"] == pytest.approx(0.31)
    assert m["n_with_first_error"] == 3
    assert m["detect_at_1"] == pytest.approx(1 / 3)  # only the early alarm (cut 1 < 3 + 1)
    assert m["detect_at_4"] == pytest.approx(2 / 3)  # cut 3 < 2 + 4
    assert m["detect_at_16"] == pytest.approx(2 / 3)
    assert m["early_alarm"] == pytest.approx(1 / 3)
    assert m["detection_delay"] == pytest.approx(1.0)  # only the one cut after its error
    # saved: after the cut, the cut token itself is produced: 6-3-1 = 2 and 4-1-1 = 2, of 6+4+6+34 tokens
    assert m["tokens_saved_at_5pct"] == pytest.approx(4 / 50)
    # AUROC over the tokens at and after each error. chosen: [0.30] + [] + [0.9, 0.8, 0.32];
    # rejected: [0.7, 0.1, 0.1, 0.1] + [0.9] + [0.9] * 6. Wins (ties half): 0.30 beats the three 0.1s (3),
    # 0.9 beats four and ties seven (7.5), 0.8 beats four (4), 0.32 beats three (3): 17.5 of 4 x 11
    assert m["auroc"] == pytest.approx(17.5 / 44)


def test_without_known_errors_only_the_filtering_numbers():
    m = localization([[0.5, 0.4]] * 4, [[0.1, 0.2, 0.3]] * 4, [None] * 4)
    assert m["n_with_first_error"] == 0 and "detect_at_1" not in m
    assert m["tokens_saved_at_5pct"] == pytest.approx(4 * 2 / 12)  # cut at 0 below 0.4: 2 of 3 saved

"""The background collation the training loop reads its micro-batches from."""

import threading
import time

import pytest

from goalrm.data.prefetch import prefetch


def test_items_arrive_in_order_and_run_ahead_at_most_depth():
    produced = []

    def items():
        for i in range(10):
            produced.append(i)
            yield i

    out = prefetch(items(), depth=2)
    assert next(out) == 0
    time.sleep(0.2)  # the producer fills the queue, then waits
    assert len(produced) <= 1 + 2 + 1  # the one taken, the queue, and the one waiting to be put
    assert [0, *out] == list(range(10))


def test_an_error_in_the_producer_is_raised_in_its_place():
    def items():
        yield 1
        yield 2
        raise ValueError("bad row 3")

    out = prefetch(items())
    assert next(out) == 1 and next(out) == 2
    with pytest.raises(ValueError, match="bad row 3"):
        next(out)


def test_closing_early_stops_the_producer():
    stopped = threading.Event()

    def items():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            stopped.set()

    out = prefetch(items(), depth=1)
    assert next(out) == 0
    out.close()
    assert stopped.wait(5)  # the thread ends instead of producing forever


def test_collation_runs_on_another_thread():
    threads = []

    def items():
        for i in range(3):
            threads.append(threading.get_ident())
            yield i

    assert list(prefetch(items())) == [0, 1, 2]
    assert threading.get_ident() not in threads

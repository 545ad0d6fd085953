import os
import signal

import pytest

from simreduce.errors import StopRequested
from simreduce.signals import raise_if_stop_requested, stop_signals_deferred


def test_a_stop_signal_is_raised_at_the_next_check_not_where_it_lands():
    before = signal.getsignal(signal.SIGTERM)
    reached = []
    with pytest.raises(StopRequested, match="stopped by SIGTERM"), stop_signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        reached.append("after the signal")  # e.g. the rest of an MLflow write that holds a lock
        raise_if_stop_requested()
        reached.append("after the check")
    assert reached == ["after the signal"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_stops_at_once():
    with pytest.raises(StopRequested, match="stopped by SIGINT"), stop_signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("the second signal did not raise")


def test_a_signal_without_a_later_check_stops_at_the_end_of_the_block():
    finished = []
    with pytest.raises(StopRequested), stop_signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        finished.append(True)
    assert finished == [True]
    with stop_signals_deferred():  # the request does not leak into the next block
        raise_if_stop_requested()

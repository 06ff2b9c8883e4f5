"""Signals held while the pool is driven are acted on at `deliver()`, by the handler they replaced."""

from __future__ import annotations

import os
import signal

import pytest

from policyengine_us_data.dispatch.deferred_signals import DeferredSignals


class Stop(BaseException):
    pass


def _raise_stop(signum, frame):
    raise Stop(signum)


@pytest.fixture
def own_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_ctrl_c_is_held_until_deliver_then_raises_keyboard_interrupt(own_handlers):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with DeferredSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)  # handled at once in the main thread: recorded, nothing raised
        assert signals.pending == [signal.SIGINT]
        with pytest.raises(KeyboardInterrupt):
            signals.deliver()
        signals.deliver()  # nothing left to act on
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_runs_the_replaced_handler_and_handlers_are_restored(own_handlers):
    signal.signal(signal.SIGTERM, _raise_stop)
    with DeferredSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Stop):
            signals.deliver()
    assert signal.getsignal(signal.SIGTERM) is _raise_stop


def test_default_and_ignored_actions(own_handlers):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with DeferredSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        signals.deliver()  # ignored Ctrl-C stays ignored
        with pytest.raises(SystemExit) as caught:
            signals.deliver()  # default SIGTERM ends the process, through the caller's cleanup
    assert caught.value.code == 128 + signal.SIGTERM


def test_a_ctrl_c_held_through_the_last_wait_is_acted_on_when_the_block_ends(own_handlers):
    """The pool's loop ends when the last chunk is collected; a Ctrl-C recorded during that wait once vanished
    and the build ran on to the end (exit 0)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        with DeferredSignals():
            os.kill(os.getpid(), signal.SIGINT)  # recorded; the block then ends without calling deliver()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_signal_held_while_another_exception_unwinds_is_not_raised_over_it(own_handlers):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(ValueError):
        with DeferredSignals():
            os.kill(os.getpid(), signal.SIGINT)
            raise ValueError("the chunk failed")

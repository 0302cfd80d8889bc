"""The kernels' thread pool: chunk order, both threads, nesting, errors, helpers kept."""

from __future__ import annotations

import os
import threading
import time

import pytest

from jaxsam.attacks import _pool


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.setattr(_pool, "threads", lambda: 2)


@pytest.mark.parametrize("n,chunk", [(0, 4), (1, 4), (10, 3), (12, 4), (1000, 7)])
def test_results_come_back_in_chunk_order(two_threads, n, chunk):
    got = _pool.run(lambda a, b: (a, b), n, chunk)
    want = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
    assert got == want


def test_the_caller_and_a_kept_helper_share_the_chunks(two_threads):
    def seen():
        who = []

        def fn(a, b):
            time.sleep(0.01)
            who.append(threading.get_ident())
            return a

        assert _pool.run(fn, 12, 1) == list(range(12))
        return set(who)

    first, second = seen(), seen()
    assert threading.get_ident() in first and len(first) == 2
    assert first == second  # the same helper thread: not a new pool per call


def test_a_pass_inside_another_pass_does_not_wait_for_a_busy_helper(two_threads):
    def inner(a, b):
        return sum(_pool.run(lambda c, d: d - c, 8, 2))

    done = []
    t = threading.Thread(target=lambda: done.append(_pool.run(inner, 6, 1)), daemon=True)
    t.start()
    t.join(20)
    assert done == [[8] * 6]


def test_the_first_error_is_raised_after_started_chunks_finish_and_no_chunk_starts_after(
    two_threads,
):
    started, finished = [], []

    def fn(a, b):
        started.append(a)
        if a == 3:
            raise ValueError("chunk 3 is bad")
        time.sleep(0.005)
        finished.append(a)
        return a

    with pytest.raises(ValueError, match="chunk 3"):
        _pool.run(fn, 40, 1)
    assert 3 in started and len(started) < 40
    assert sorted(finished) == sorted(a for a in started if a != 3)  # nothing left running


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_its_own_helpers(two_threads):
    _pool.run(lambda a, b: a, 4, 1)  # the parent's helper exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            ok = _pool.run(lambda a, b: a, 8, 1) == list(range(8))
            os.write(w, b"1" if ok and _pool._helpers is not None else b"0")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.waitpid(pid, 0)


def test_the_command_line_does_not_take_idle_helpers_for_a_failed_writes_threads(
    two_threads, monkeypatch
):
    from jaxsam import cli

    assert cli.KERNEL_HELPERS == _pool.THREAD_NAME
    _pool.run(lambda a, b: a, 4, 1)  # a helper is alive, idle
    helpers = [t for t in threading.enumerate() if t.name.startswith(_pool.THREAD_NAME)]
    assert helpers
    alive = [threading.main_thread(), *helpers]  # this process's other threads left out
    monkeypatch.setattr(threading, "enumerate", lambda: list(alive))
    exits, written = [], []
    monkeypatch.setattr(cli.os, "_exit", exits.append)
    monkeypatch.setattr(cli.os, "dup", lambda fd: 1000 + fd)  # keep the test's stderr
    monkeypatch.setattr(cli.os, "open", lambda *a: 999)
    monkeypatch.setattr(cli.os, "dup2", lambda *a: None)
    monkeypatch.setattr(cli.os, "write", lambda fd, b: written.append(b) or len(b))
    line = "jaxsam train: error: cannot write x: the disk is full"
    cli._exit_before_threads_report(line)
    assert exits == [] and written == []  # the ordinary path: the caller prints, returns 2
    alive.append(threading.Thread(name="orbax-writer"))  # a thread that could report
    cli._exit_before_threads_report(line)
    assert exits == [2] and written == [(line + "\n").encode()]  # the one line, out at once
    monkeypatch.undo()

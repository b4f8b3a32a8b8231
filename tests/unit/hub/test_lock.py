"""``hub.lock.exclusive``: taken at once when free; when held elsewhere, says so and waits."""

from __future__ import annotations

import threading

from isaseg_cli.hub.lock import exclusive


def test_a_free_lock_is_taken_without_waiting(tmp_path) -> None:
    waits = []
    with exclusive(tmp_path / "x.lock", lambda: waits.append(1)) as waited:
        assert not waited
    assert waits == [] and (tmp_path / "x.lock").exists()


def test_a_held_lock_is_waited_for_and_the_wait_is_told_first(tmp_path) -> None:
    lock_file, events = tmp_path / "x.lock", []
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with exclusive(lock_file):
            held.set()
            release.wait(10)
            events.append("released")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)

    def on_wait() -> None:
        events.append("waiting")
        release.set()

    with exclusive(lock_file, on_wait) as waited:
        events.append("held")
    thread.join(10)
    assert waited and events == ["waiting", "released", "held"]

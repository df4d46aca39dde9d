"""The lease: held messages stay hidden, and a message let go is never renewed."""

import time

from analysis.worker.lease import Lease


def receive_within(queue, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = queue.receive(32, visibility_seconds=30)
        if found:
            return found
        time.sleep(0.2)
    return []


def test_held_messages_stay_hidden_past_their_visibility(queue):
    for job_id in ("a" * 32, "b" * 32):
        queue.enqueue(job_id)
    held = queue.receive(32, visibility_seconds=2)
    with Lease(queue, held, visibility_seconds=2) as lease:
        time.sleep(3.5)  # longer than the visibility: only the heartbeat keeps them hidden
        assert queue.receive(32, visibility_seconds=2) == []
        for delivery in held:
            lease.complete(delivery)
    assert receive_within(queue, 1.5) == []


def test_a_released_message_comes_back_after_its_delay_even_if_a_beat_follows(queue):
    """A renewal after the release would hide it for the whole visibility timeout (30 s here)."""
    queue.enqueue("c" * 32)
    (delivery,) = queue.receive(1, visibility_seconds=30)
    lease = Lease(queue, [delivery], visibility_seconds=30)
    lease.release(delivery, delay_seconds=1)
    lease.beat()  # the heartbeat may fire right after the release
    (again,) = receive_within(queue, 10)
    assert again.job_id == "c" * 32 and again.dequeue_count == 2


def test_a_message_taken_by_another_receive_leaves_the_lease(queue):
    queue.enqueue("d" * 32)
    (mine,) = queue.receive(1, visibility_seconds=1)
    lease = Lease(queue, [mine], visibility_seconds=30)
    time.sleep(1.5)  # the lease lapsed unseen
    (theirs,) = queue.receive(1, visibility_seconds=30)
    lease.beat()
    assert lease.held() == []
    lease.complete(mine)  # a stale receipt: nothing happens to their message
    queue.extend(theirs, 30)


def test_renewals_run_side_by_side(queue):
    for n in range(16):
        queue.enqueue(f"{n:032d}")
    held = queue.receive(16, visibility_seconds=30)
    lease = Lease(queue, held, visibility_seconds=30)
    calls, real_extend = [], queue.extend
    threads = set()

    def extend(delivery, seconds):
        import threading

        threads.add(threading.current_thread().name)
        calls.append(delivery.message_id)
        real_extend(delivery, seconds)

    queue.extend = extend
    try:
        lease.beat()
    finally:
        queue.extend = real_extend
    assert sorted(calls) == sorted(d.message_id for d in held) and len(threads) > 1

"""The lease: held messages stay hidden, and a message let go is never renewed."""

import time


from analysis.lease import Lease


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

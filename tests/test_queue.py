"""The Azure Storage Queue backend: visibility, release, dead-letter, batches."""

import time


def test_message_is_hidden_while_held_and_extend_keeps_it_hidden(queue):
    queue.enqueue("a" * 32)
    (delivery,) = queue.receive(32, visibility_seconds=2)
    assert delivery.job_id == "a" * 32 and delivery.dequeue_count == 1
    first_receipt = delivery.pop_receipt
    queue.extend(delivery, 6)
    assert delivery.pop_receipt != first_receipt
    time.sleep(3)
    assert queue.receive(32, visibility_seconds=2) == []  # extended past its first timeout
    assert queue.approximate_length() == 1  # hidden, not gone
    queue.complete(delivery)
    assert queue.approximate_length() == 0  # the count includes hidden messages: this one is gone


def test_receive_takes_what_is_waiting_up_to_the_maximum(queue):
    for n in range(40):
        queue.enqueue(f"{n:032d}")
    first = queue.receive(35, visibility_seconds=30)  # more than one storage call's 32
    assert len(first) == 35 and len({d.job_id for d in first}) == 35
    rest = queue.receive(35, visibility_seconds=30)
    assert len(rest) == 5 and not {d.job_id for d in rest} & {d.job_id for d in first}
    assert queue.receive(35, visibility_seconds=30) == []


def test_released_message_comes_back_with_a_higher_count(queue):
    queue.enqueue("b" * 32)
    (delivery,) = queue.receive(1, visibility_seconds=30)
    queue.release(delivery)
    (again,) = queue.receive(1, visibility_seconds=30)
    assert again.job_id == "b" * 32 and again.dequeue_count == 2


def test_dead_letter_moves_the_message(queue):
    queue.enqueue("c" * 32)
    (delivery,) = queue.receive(1, visibility_seconds=30)
    queue.dead_letter(delivery, "broken")
    assert queue.receive(1, visibility_seconds=1) == []
    poisoned = queue.poison.receive_message()
    assert '"reason": "broken"' in poisoned.content


def test_foreign_message_goes_to_poison_queue(queue):
    queue.queue.send_message("not json")
    queue.enqueue("d" * 32)
    assert [d.job_id for d in queue.receive(32, visibility_seconds=30)] == ["d" * 32]
    assert queue.poison.receive_message().content == "not json"


def test_a_message_carries_the_record_as_queued_unless_it_is_large(queue):
    queue.enqueue("e" * 32, {"record": {"job_id": "e" * 32}, "etag": "0x1"})
    queue.enqueue("f" * 32, {"record": {"inputs": ["x" * 100] * 400}, "etag": "0x2"})  # ~40 KB
    queue.enqueue("0" * 32)
    carried = {d.job_id: d.queued for d in queue.receive(32, visibility_seconds=30)}
    assert carried == {"e" * 32: {"record": {"job_id": "e" * 32}, "etag": "0x1"}, "f" * 32: None, "0" * 32: None}


def test_a_message_lives_until_it_is_taken(queue):
    queue.enqueue("f" * 32)
    (peeked,) = queue.queue.peek_messages()
    assert peeked.expires_on.year == 9999  # no time to live: a long backlog keeps every job

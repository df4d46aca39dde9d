"""The disk budget: downloads take only the room there is, less the reserve."""

import threading
from pathlib import Path

from analysis.worker.disk import DiskBudget


def usage_of(total: int, free: int):
    return lambda folder: (total, total - free, free)


def test_a_download_takes_room_until_it_is_written():
    budget = DiskBudget(reserve_bytes=100, folder=lambda: Path("/"), usage=usage_of(1000, 400))
    assert budget.capacity() == 900
    assert budget.take(250)  # 300 free beyond the reserve
    assert not budget.take(100)  # 50 left while the first is on its way
    budget.give(250)
    assert budget.take(300) and not budget.take(1)


def test_the_real_disk_is_asked(tmp_path):
    budget = DiskBudget(reserve_bytes=0, folder=lambda: tmp_path)
    assert budget.capacity() > 0
    assert budget.take(1) and not budget.take(budget.capacity() + 1)


def test_downloads_side_by_side_never_overcommit():
    budget = DiskBudget(reserve_bytes=0, folder=lambda: Path("/"), usage=usage_of(10_000, 1000))
    granted = []
    threads = [threading.Thread(target=lambda: granted.append(budget.take(100))) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 10

"""CPU threads on a shared machine: a command takes the usable CPUs that are free when it starts
(affinity, cgroup quota, the load of other processes), or what the user says."""
import logging

import pytest
import torch

from celebgan import devices
from celebgan.devices import busy_cpus, cgroup_cpu_quota, choose_threads, usable_cpus, use_threads
from celebgan.errors import UserError


@pytest.fixture
def machine(monkeypatch):
    """A machine of 4 usable CPUs with `busy` of them kept busy by other processes."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(devices, "usable_cpus", lambda: 4)

    def with_load(busy):
        monkeypatch.setattr(devices, "busy_cpus", lambda: busy)
    return with_load


@pytest.mark.parametrize("busy, processes, threads", [
    (0.1, 1, 4),   # idle: every usable CPU
    (2.0, 1, 2),   # two busy: the two free ones
    (3.6, 1, 1),   # nearly all busy: one thread, never none
    (9.0, 1, 1),   # overloaded
    (0.0, 2, 2),   # two DDP ranks share the free CPUs
    (2.2, 3, 1),
    (None, 1, 4),  # the load cannot be read: the usable CPUs
])
def test_auto_takes_the_free_usable_cpus(machine, busy, processes, threads):
    machine(busy)
    chosen, reason = choose_threads("auto", processes)
    assert chosen == threads
    assert "of 4 usable CPUs" in reason and "threads=N overrides" in reason


def test_the_users_choice_wins(machine, monkeypatch):
    machine(3.9)
    assert choose_threads(3)[0] == 3  # the config's threads=3, whatever the load
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads("auto") == (2, "OMP_NUM_THREADS (set in the environment)")


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5, True])
def test_a_bad_setting_is_one_clear_error(bad):
    with pytest.raises(UserError, match=r"threads=.* must be auto or a whole number >= 1"):
        choose_threads(bad)


def test_use_threads_sets_torch_and_the_environment_for_child_processes(machine, monkeypatch, caplog):
    machine(3.0)
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="celebgan"):
            assert use_threads("auto") == 1
        assert torch.get_num_threads() == 1 and devices.os.environ["OMP_NUM_THREADS"] == "1"
        assert "CPU threads: 1 of 4 usable CPUs, 3.0 busy with other work" in caplog.text
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "150000 100000\n"}, 1.5),   # cgroup v2: a quota of 1.5 CPUs
    ({"cpu.max": "max 100000\n"}, None),     # v2 without a limit
    ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),                               # no cgroup files at all
])
def test_cgroup_quota(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_quota(tmp_path) == quota


def test_a_quota_caps_the_usable_cpus(monkeypatch):
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(devices, "cgroup_cpu_quota", lambda: 1.5)
    assert usable_cpus() == 1
    monkeypatch.setattr(devices, "cgroup_cpu_quota", lambda: None)
    assert usable_cpus() == 4


def test_busy_cpus_reads_the_share_of_time_not_idle(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal: 1,000 ticks later, 3 of 4 CPUs' worth were busy
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1 2 3\n")
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(devices.time, "sleep", lambda s: stat.write_text("cpu  800 0 150 1050 0 0 0 0 0 0\n"))
    assert busy_cpus(stat=stat) == pytest.approx(3.0)
    assert busy_cpus(stat=tmp_path / "missing") is None

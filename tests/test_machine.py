"""machine.py: how busy the cores were while something was timed."""
from onmt_qd.machine import LoadMeter, usable_cores


def meter(cores, threads, others):
    load = LoadMeter(threads)
    load.cpus, load.others = set(range(cores)), others
    return load


def test_busy_means_others_took_the_cores_its_own_threads_need():
    assert not meter(2, 1, 1.0).busy      # one thread each, a core each: not slowed
    assert meter(2, 1, 1.9).busy          # the other took both cores
    assert meter(2, 2, 0.6).busy          # two threads, another job on one core
    assert not meter(2, 2, 0.3).busy      # background noise
    assert meter(2, None, 0.6).busy       # unknown threads: all cores
    assert not meter(2, None, None).busy  # not measured (no /proc/stat)


def test_the_record_says_what_was_measured():
    """Only the shape is checked: what other processes did depends on the machine (under
    make test the other worker uses a core)."""
    with LoadMeter(threads=1) as load:
        sum(range(10_000))
    record = load.as_dict()
    assert record["cores"] == usable_cores() and record["threads"] == 1
    assert record["other_processes_cores"] is None or record["other_processes_cores"] >= 0

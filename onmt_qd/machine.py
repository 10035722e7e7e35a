"""How many cores a process may use, and how busy they were while it was timed: a speed
measured while other jobs held the cores says little about the model (OpenMP threads
spin and thrash when their cores are taken: 6-16 sentences/s where the same model on
an idle machine gives 70), so every timing carries the load it was taken under."""
import os
import time

# a timing is flagged when other processes used, on average over the timed interval,
# more than this share of the cores beyond those its own threads leave free
BUSY_SHARE = 0.25


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity), not os.cpu_count(): a job
    pinned to 2 of a machine's 64 cores has 2."""
    return len(os.sched_getaffinity(0))


def _busy_jiffies(cpus):
    """Summed non-idle time (clock ticks) of ``cpus`` from /proc/stat; None off Linux."""
    try:
        with open("/proc/stat") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    total = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            values = [int(v) for v in fields]
            # user nice system idle iowait irq softirq steal (guest is inside user)
            total += sum(values[:8]) - values[3] - values[4]
    return total


def _own_cpu_seconds():
    """CPU time of this process and its waited-for children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class LoadMeter:
    """``with LoadMeter(threads) as load: work()``; then ``load.as_dict()``: the cores
    the process may use, the 1-minute load average at the start, and how many cores
    other processes kept busy on average meanwhile (all busy time of those CPUs minus
    this process's own CPU time), with ``busy`` set when they took more than the cores
    its ``threads`` (default: all) leave free plus BUSY_SHARE of them: a one-thread
    evaluation beside another on 2 cores is not slowed, a 2-thread one is."""

    def __init__(self, threads: int | None = None):
        self.threads = threads

    def __enter__(self):
        self.cpus = os.sched_getaffinity(0)
        self.load_average = os.getloadavg()[0]
        self.start = (time.perf_counter(), _busy_jiffies(self.cpus), _own_cpu_seconds())
        self.others = None
        return self

    def __exit__(self, *exc_info):
        wall, jiffies, own = self.start
        wall = time.perf_counter() - wall
        now = _busy_jiffies(self.cpus)
        if jiffies is not None and now is not None and wall > 0:
            machine = (now - jiffies) / os.sysconf("SC_CLK_TCK")
            self.others = max(0.0, machine - (_own_cpu_seconds() - own)) / wall
        return False

    @property
    def busy(self) -> bool:
        cores = len(self.cpus)
        free = max(0, cores - min(self.threads or cores, cores))
        return self.others is not None and self.others > free + BUSY_SHARE * cores

    def as_dict(self) -> dict:
        return {"cores": len(self.cpus), "threads": self.threads,
                "load_average_1min": round(self.load_average, 2),
                "other_processes_cores": None if self.others is None else round(self.others, 2),
                "busy": self.busy}


def idle_cores(sample_seconds: float = 1.0) -> int:
    """The usable cores not kept busy by other processes over ``sample_seconds``
    (at least one): how many threads a timed job can run without fighting for cores."""
    with LoadMeter() as load:
        time.sleep(sample_seconds)
    taken = round(load.others or 0.0)
    return max(1, len(load.cpus) - taken)

"""Where a long job is (translation, the teacher cache), on standard error: standard
output may carry the job's own output (onmt_qd_translate -output -)."""
import sys
import time

# the first line after this long (short runs stay silent), then at most one per this long
REPORT_SECONDS = 5.0


class Progress:
    """``NAME: 1,200/5,000 sentences translated, 85.3 sentences/s, about 45 s left``."""

    def __init__(self, name, total, what="sentences translated"):
        self.name, self.total, self.what, self.done = name, total, what, 0
        self.start = self.last = time.perf_counter()

    def advance(self, count):
        """``count`` more sentences done."""
        self.done += count
        now = time.perf_counter()
        if now - self.last < REPORT_SECONDS or self.done >= self.total:
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        print(f"{self.name}: {self.done:,}/{self.total:,} {self.what}, {rate:.1f} sentences/s, "
              f"about {_duration((self.total - self.done) / rate)} left",
              file=sys.stderr, flush=True)


def _duration(seconds):
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"

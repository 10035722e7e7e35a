"""Where a running stage is, read from the log its command writes: one short line for
the recipe's console (epoch n of N, step, validation perplexity; parts or sentences
done), so a user watching a long recipe sees it move. Each function takes a log's
path and returns (the line, the fraction done) or None while the log says nothing yet."""
import os
import re

STEPS_PER_EPOCH = re.compile(r"(\d+) steps per epoch; training (\d+) epochs = (\d+) steps")
STEP = re.compile(r"Step\s+(\d+)/\s*(\d+);.*?ppl:\s*([\d.]+)")  # OpenNMT-py's report line
VALIDATION = re.compile(r"Validation perplexity: ([\d.e+]+)")
COUNT = re.compile(r"(\d[\d,]*)\s*/\s*(\d[\d,]*)")
TAIL_BYTES = 64 * 1024  # a log's end holds its latest progress


def _head_and_tail(path):
    """The first and last TAIL_BYTES of a log: the training plan is near its start."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(TAIL_BYTES)
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - TAIL_BYTES))
            tail = handle.read()
    except OSError:
        return "", ""
    return head.decode("utf-8", "replace"), tail.decode("utf-8", "replace")


def training(path):
    """``epoch 2/6, step 450/1350, train ppl 31.2, valid ppl 28.4`` from onmt_qd_train's log."""
    head, tail = _head_and_tail(path)
    plan = STEPS_PER_EPOCH.search(head) or STEPS_PER_EPOCH.search(tail)
    steps = STEP.findall(tail)
    if not steps:
        return ("epoch 1/{1}, starting".format(*plan.groups()), 0.0) if plan else None
    step, total, train_ppl = int(steps[-1][0]), int(steps[-1][1]), steps[-1][2]
    parts = [f"step {step}/{total}", f"train ppl {float(train_ppl):.1f}"]
    if plan:
        per_epoch, epochs = int(plan.group(1)), int(plan.group(2))
        parts.insert(0, f"epoch {min(epochs, step // per_epoch + 1)}/{epochs}")
    valid = VALIDATION.findall(tail)
    if valid:
        parts.append(f"valid ppl {float(valid[-1]):.1f}")
    return ", ".join(parts), step / total if total else 0.0


def counted(path, what):
    """``N/M WHAT`` from the last "done / total" a log line holds (the teacher cache's
    sentences, the teacher's translated parts, models compressed or evaluated)."""
    _, tail = _head_and_tail(path)
    for line in reversed(tail.splitlines()):
        counts = COUNT.findall(line)
        if counts:
            done, total = (int(g.replace(",", "")) for g in counts[-1])
            return f"{done:,}/{total:,} {what}", done / total if total else 0.0
    return None

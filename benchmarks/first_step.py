"""Time to the first training step on a small corpus: stock onmt_train (OpenNMT-py's
loading defaults: -bucket_size 262144, -num_workers 2) against onmt_qd_train (the
bucket capped at a reader's share of the corpus, loader workers only for a large one:
onmt_qd/train/loading.py), same config, same machine, one after the other.

    python benchmarks/first_step.py -config DATA.yaml [-repeats 2] [-timeout 600]
        [-json OUT.json]

The config names the data, vocabulary and model and leaves bucket_size and num_workers
unset. Each run trains until its log shows step 1 (-report_every 1), and is then
stopped; the row gives the seconds from the command's start to that line and how busy
the machine was just before (onmt_qd/machine.py); the summary, the best of each and
the speed-up."""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from onmt_qd.fileio import atomic_output
from onmt_qd.machine import LoadMeter

COMMANDS = {"onmt_train": "onmt.bin.train", "onmt_qd_train": "onmt_qd.bin.train"}
FIRST_STEP = re.compile(r"Step\s+1/")  # OpenNMT-py's report line pads the numbers


def seconds_to_first_step(module, config, folder, timeout):
    """Seconds from starting ``module`` until its log reports step 1 (None: timed out)."""
    log = os.path.join(folder, f"{module}.log")
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "-config", config, "-save_model",
             os.path.join(folder, "model"), "-train_steps", "2", "-report_every", "1",
             "-valid_steps", "100000", "-save_checkpoint_steps", "100000"],
            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while time.perf_counter() - start < timeout:
            with open(log) as handle:
                if FIRST_STEP.search(handle.read()):
                    return time.perf_counter() - start
            if process.poll() is not None and not FIRST_STEP.search(open(log).read()):
                raise RuntimeError(f"{module} ended before its first step:\n" +
                                   open(log).read()[-2000:])
            time.sleep(0.2)
        return None
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-config", required=True)
    parser.add_argument("-repeats", type=int, default=2)
    parser.add_argument("-timeout", type=float, default=600)
    parser.add_argument("-json", default=None)
    args = parser.parse_args()
    rows = []
    for _ in range(args.repeats):
        for name, module in COMMANDS.items():
            # the machine just before the run (during it, onmt_train's loader workers,
            # its children's children, would count as other processes)
            with LoadMeter() as before:
                time.sleep(1.0)
            with tempfile.TemporaryDirectory() as folder:
                seconds = seconds_to_first_step(module, args.config, folder, args.timeout)
            rows.append({"command": name, "seconds_to_first_step":
                         None if seconds is None else round(seconds, 1),
                         "machine_before": before.as_dict()})
            print(json.dumps(rows[-1]), flush=True)
    best = {name: min((r["seconds_to_first_step"] or args.timeout) for r in rows
                      if r["command"] == name) for name in COMMANDS}
    summary = {"rows": rows, "best_seconds": best,
               "speed_up": round(best["onmt_train"] / best["onmt_qd_train"], 1)}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    if args.json:
        with atomic_output(args.json) as temporary, open(temporary, "w") as handle:
            json.dump(summary, handle, indent=1)


if __name__ == "__main__":
    main()

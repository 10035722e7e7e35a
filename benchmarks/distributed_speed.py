"""Data-parallel CPU processes against one process (issue 23), in one run, the same
sentences: onmt_qd_train with -processes gloo processes (cores/processes threads, batch
b each) against one process on every core with the same global batch (what the
processes buy on these cores), and against one process on one process's share of the
cores with batch b (the scaling efficiency: N processes ideally go N times as fast).
With -teacher, the same three rows for the teacher cache build.

    python benchmarks/distributed_speed.py -config TRAIN.yaml [-processes 2 | -gpus N]
        [-batch_size 32] [-steps 80] [-from_step 20] [-teacher T.pt] [-topk 8]
        [-- more onmt_qd_train options]

-gpus N times one GPU against N (NCCL), batch -batch_size on each: the scaling
efficiency (issue 23's goal: at least 0.85).

TRAIN.yaml is a full onmt_qd_train config (a recipe's configs/*.yaml too): its
save_model, train_from, epochs, batch type (sentences here), checkpointing and
validation are replaced (models go
to a temporary folder; no validation, one checkpoint at the end). The speed is timed
between the log lines of step -from_step and step -steps (their millisecond
timestamps), so start-up, vocabulary and the first batches are left out; the cache
build's time is the command's (start-up and merge included). The rows run one after
the other, each alone: time them on an idle machine."""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import yaml

import common  # noqa: F401 - first: it sets the process up for OpenNMT-py
from onmt_qd.machine import usable_cores
from onmt_qd.processes import free_port

# OpenNMT-py's log line: "[2026-12-03 13:14:54,123 INFO] Step 20/   80; ..."
STEP_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO\] Step +(\d+)/")
REPLACED = ("save_model", "train_from", "epochs", "keep_checkpoint", "train_steps",
            "valid_steps", "save_checkpoint_steps", "report_every", "batch_size",
            "batch_type", "world_size", "gpu_ranks", "gpu_backend", "log_file")


def training_config(path, folder, steps, report_every):
    """``path`` with the keys this benchmark sets replaced, written to ``folder``."""
    with open(path) as handle:
        config = yaml.safe_load(handle)
    config = {k: v for k, v in config.items() if k not in REPLACED}
    config.update(train_steps=steps, valid_steps=10 ** 9, save_checkpoint_steps=10 ** 9,
                  report_every=report_every, overwrite=True, batch_type="sents")
    out = os.path.join(folder, "train.yaml")
    with open(out, "w") as handle:
        yaml.safe_dump(config, handle)
    return out


def step_times(log):
    """{step: seconds since the epoch} from OpenNMT-py's step reports."""
    times = {}
    for line in log.splitlines():
        match = STEP_LINE.match(line)
        if match:
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            times[int(match.group(2))] = stamp.timestamp()
    return times


def run(command, threads):
    """Run an onmt_qd command (list) with OMP_NUM_THREADS=threads; returns (stderr,
    wall seconds); a failure ends the benchmark with the command's last line."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *command], env=env, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["no message"]
        sys.exit(f"distributed_speed: {' '.join(command[:1])} failed: {last[0]}")
    return done.stderr, wall


def parallel(processes):
    return ["-world_size", str(processes), "-gpu_backend", "gloo", "-master_port",
            str(free_port())]


def share(args):
    """Threads of one of -processes processes on this machine's cores."""
    return max(1, usable_cores() // args.processes)


def training_rows(args):
    """{row: (name, options, OMP threads, global batch)}. "share": one process on the
    cores one of N processes gets (one GPU), batch b; "parallel": N processes (GPUs),
    batch b each, ideally N times as fast as "share"; on the CPU also "whole": one
    process on every core with the parallel run's global batch N x b."""
    b, n = args.batch_size, args.gpus or args.processes
    if args.gpus:
        return {"share": (f"1 GPU, batch {b}", ["-batch_size", str(b), "-world_size", "1",
                                                "-gpu_ranks", "0"], usable_cores(), b),
                "parallel": (f"{n} GPUs, batch {b} each",
                             ["-batch_size", str(b), "-world_size", str(n), "-gpu_ranks",
                              *map(str, range(n)), "-master_port", str(free_port())],
                             usable_cores(), n * b)}
    return {"share": (f"1 process, {share(args)} thread(s), batch {b}",
                      ["-batch_size", str(b)], share(args), b),
            "whole": (f"1 process, {usable_cores()} threads, batch {n * b}",
                      ["-batch_size", str(n * b)], usable_cores(), n * b),
            "parallel": (f"{n} gloo processes, {share(args)} thread(s) each, batch {b} each",
                         ["-batch_size", str(b), *parallel(n)], share(args), n * b)}


def training_speed(args, extra, config, folder):
    """{row: sentences/s} of training_rows."""
    speeds = {}
    for row, (name, options, threads, batch) in training_rows(args).items():
        save = os.path.join(folder, row, "model")
        log, _ = run(["onmt_qd.bin.train", "-config", config, "-save_model", save, *options,
                      *extra], threads)
        times = step_times(log)
        if args.from_step not in times or args.steps not in times:
            sys.exit(f"distributed_speed: no step {args.from_step} or {args.steps} report "
                     f"in the {name} log")
        seconds = times[args.steps] - times[args.from_step]
        speeds[row] = (args.steps - args.from_step) * batch / seconds
        print(f"{name}: {seconds:.2f} s for steps {args.from_step}-{args.steps}, "
              f"{speeds[row]:.1f} sentences/s", flush=True)
    return speeds


def cache_speed(args, config, folder):
    """{row: sentences/s} of the teacher cache build (wall time of the command) over
    the training config's corpora (it ignores the training keys), rows as
    training_rows' on the CPU."""
    rows = {"share": (f"1 process, {share(args)} thread(s)", [], share(args)),
            "whole": (f"1 process, {usable_cores()} threads", [], usable_cores()),
            "parallel": (f"{args.processes} gloo processes, {share(args)} thread(s) each",
                         parallel(args.processes), share(args))}
    speeds = {}
    for row, (name, options, threads) in rows.items():
        output = os.path.join(folder, f"cache_{row}")
        _, wall = run(["onmt_qd.bin.teacher_cache", "-config", config, "-teacher_model",
                       args.teacher, "-topk", str(args.topk), "-output", output, *options],
                      threads)
        with open(os.path.join(output, "header.json")) as handle:
            sentences = sum(c["lines"] for c in json.load(handle)["fingerprint"]["corpora"]
                            .values())
        speeds[row] = sentences / wall
        print(f"teacher cache, {name}: {wall:.1f} s, {speeds[row]:.1f} sentences/s",
              flush=True)
    return speeds


def report(speeds, n, what):
    """The parallel row against one process on the same cores, and its scaling
    efficiency against one process's share."""
    if "whole" in speeds:
        print(f"{what}: {n} processes / 1 process on the same cores: "
              f"{speeds['parallel'] / speeds['whole']:.2f}")
    print(f"{what}: scaling efficiency of {n} (sentences/s / ({n} x one's share)): "
          f"{speeds['parallel'] / (n * speeds['share']):.2f}")


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-config", required=True)
    parser.add_argument("-processes", type=int, default=2)
    parser.add_argument("-gpus", type=int, default=0,
                        help="time 1 GPU against this many instead (batch -batch_size each)")
    parser.add_argument("-batch_size", type=int, default=32, help="per process")
    parser.add_argument("-steps", type=int, default=80)
    parser.add_argument("-from_step", type=int, default=20)
    parser.add_argument("-teacher", help="also time the teacher cache build")
    parser.add_argument("-topk", type=int, default=8)
    args = parser.parse_args(argv)
    if args.gpus and args.teacher:
        parser.error("-teacher times the cache build on CPU processes: leave out -gpus")
    if not 0 < args.from_step < args.steps or args.steps % args.from_step:
        parser.error("-from_step must be above 0, below -steps and divide it (the log "
                     "reports every -from_step steps)")
    with tempfile.TemporaryDirectory() as folder:
        config = training_config(args.config, folder, args.steps, args.from_step)
        report(training_speed(args, extra, config, folder), args.gpus or args.processes,
               "training")
        if args.teacher:
            report(cache_speed(args, config, folder), args.processes, "teacher cache")

if __name__ == "__main__":
    main()

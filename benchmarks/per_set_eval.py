"""What evaluating each test set in a run of its own costs (issue 32): one test set cut
into -parts files, evaluated by onmt_qd_eval as one pooled file (one run) and as the
parts (one run each, the model built once), alternated -repeats times, each in a fresh
process; prints the translation seconds, the whole wait and BLEU of both.

    python benchmarks/per_set_eval.py -model M.pt|M.qdz|DIR -src TEST.de -tgt TEST.en
        [-parts 4] [-batch_size 64] [-repeats 2] [-json OUT.json]"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from onmt_qd.fileio import atomic_output, read_text_lines


def write(path, lines):
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{line}\n" for line in lines)
    return path


def evaluated(model, sources, references, batch_size, json_path):
    """onmt_qd_eval's JSON for ``sources``/``references`` (lists of files)."""
    subprocess.run([sys.executable, "-m", "onmt_qd.bin.eval", "-model", model, "-src",
                    *sources, "-tgt", *references, "-batch_size", str(batch_size),
                    "-json", json_path], check=True, capture_output=True)
    with open(json_path) as handle:
        return json.load(handle)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-model", required=True)
    parser.add_argument("-src", required=True)
    parser.add_argument("-tgt", required=True)
    parser.add_argument("-parts", type=int, default=4)
    parser.add_argument("-batch_size", type=int, default=64)
    parser.add_argument("-repeats", type=int, default=2)
    parser.add_argument("-json", default=None)
    args = parser.parse_args()
    sources, references = read_text_lines(args.src), read_text_lines(args.tgt, "-tgt")
    size = -(-len(sources) // args.parts)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        parts = [(write(os.path.join(folder, f"part{i}.src"), sources[i * size:(i + 1) * size]),
                  write(os.path.join(folder, f"part{i}.tgt"), references[i * size:(i + 1) * size]))
                 for i in range(args.parts)]
        for repeat in range(args.repeats):
            for kind, files in (("pooled", [(args.src, args.tgt)]), ("sets", parts)):
                result = evaluated(args.model, [s for s, _ in files], [t for _, t in files],
                                   args.batch_size, os.path.join(folder, "result.json"))
                rows.append({"run": kind, "repeat": repeat + 1, "runs": len(files),
                             **{k: result[k] for k in ("translate_seconds", "total_seconds",
                                                       "bleu", "machine")}})
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        with atomic_output(args.json) as temporary, open(temporary, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()

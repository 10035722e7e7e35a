"""A recipe's report: results.json (one entry per evaluated model), report.md (the
paper's tables, each number traceable to its config, log and evaluated file) and
bleu_vs_size.png."""
import json
import os
import re

METHODS = ["teacher", "student_fp", "student_distilled_fp", "pm_quantization",
           "quantized_distillation", "differentiable_quantization", "quantized_normal_loss"]


def method_and_bits(name):
    match = re.match(r"(.+)_(\d)bit$", name)
    if match:
        return match.group(1), int(match.group(2))
    return name, 32


def collect(pipeline):
    entries = []
    for name in pipeline.evaluated:
        with open(pipeline.path("eval", f"{name}.json")) as handle:
            result = json.load(handle)
        method, bits = method_and_bits(name)
        entry = {"name": name, "method": method, "bits": bits,
                 "path": os.path.relpath(pipeline.evaluated_file(name), pipeline.work),
                 "bleu": result["bleu"], "chrf": result["chrf"], "ppl": result["ppl"],
                 "size_bytes": result["size_bytes"], "n_params": result["n_params"],
                 "sentences_per_second": result["sentences_per_second"],
                 "bleu_signature": result["bleu_signature"],
                 "config": f"configs/{name}.yaml" if os.path.exists(
                     pipeline.path("configs", f"{name}.yaml")) else None,
                 "log": f"logs/{name}.log"}
        size_file = pipeline.path("sizes", f"{name}.json")
        if os.path.exists(size_file):
            with open(size_file) as handle:
                entry["size_report"] = json.load(handle)
        entries.append(entry)
    return entries


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _mb(n):
    return f"{n / 1e6:.2f}"


def render(pipeline, entries):
    by_name = {e["name"]: e for e in entries}
    teacher = by_name["teacher"]
    teacher_fp32 = teacher["n_params"] * 4
    out = [f"# {pipeline.name} ({pipeline.profile_name} profile)", "",
           f"Test set: `{pipeline.data_config()['test']['src']}`. BLEU and chrF: sacrebleu on "
           f"detokenized output, beam 5 (`{teacher['bleu_signature']}`). Perplexity: the "
           "reference, teacher-forced. Size: bytes on disk of the evaluated file (MB = 10^6 "
           "bytes); quantized models are evaluated from their compressed `.qdz` file. "
           "Every row names its config (`configs/`), log (`logs/`) and file (`models/`).", "",
           "## Full-precision models", ""]
    rows = []
    for e in entries:
        if e["bits"] == 32:
            rows.append([e["name"], e["ppl"], e["bleu"], e["chrf"], e["n_params"],
                         _mb(e["n_params"] * 4), _mb(e["size_bytes"]), e["path"]])
    out += [_table(["model", "ppl", "BLEU", "chrF", "params", "fp32 weights MB",
                    "checkpoint MB", "file"], rows), ""]
    out += ["## Quantized students", "",
            f"Ratio: fp32 weights of the teacher ({_mb(teacher_fp32)} MB) over the file on disk.",
            ""]
    rows = []
    for e in sorted((e for e in entries if e["bits"] < 32), key=lambda e: (e["bits"], e["method"])):
        rows.append([e["method"], e["bits"], e["ppl"], e["bleu"], e["chrf"], _mb(e["size_bytes"]),
                     f"{teacher_fp32 / e['size_bytes']:.1f}x", e["path"]])
    out += [_table(["method", "bits", "ppl", "BLEU", "chrF", "size MB", "vs teacher fp32",
                    "file"], rows), ""]
    rows = []
    for e in entries:
        report = e.get("size_report")
        if report:
            rows.append([e["name"], e["bits"], f"{report['mean_code_bits']:.3f}",
                         f"{report['entropy_bits']:.3f}", f"{e['bits'] + 64 / 256:.2f}",
                         _mb(report["paper_formula_bytes"]), _mb(e["size_bytes"])])
    if rows:
        out += ["## Huffman coding of the quantized weights", "",
                "Mean code bits per quantized weight vs the entropy bound and fixed width "
                "(b + 0.25 bits with two fp32 scales per 256-bucket); sizes by the paper's "
                "formula (docs/method.md §7) and on disk.", "",
                _table(["model", "bits", "mean code bits", "entropy", "fixed width bits",
                        "paper formula MB", "on disk MB"], rows), ""]
    rows = []
    for bits in sorted({e["bits"] for e in entries if e["method"] == "quantized_normal_loss"}):
        pair = [by_name.get(f"quantized_distillation_{bits}bit"),
                by_name.get(f"quantized_normal_loss_{bits}bit")]
        rows += [[e["method"], bits, e["ppl"], e["bleu"]] for e in pair if e]
    if rows:
        out += ["## Distillation vs normal loss when quantizing", "",
                _table(["loss", "bits", "ppl", "BLEU"], rows), ""]
    out += ["![BLEU vs size](bleu_vs_size.png)", ""]
    return "\n".join(out)


def plot(entries, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = dict(zip(METHODS, "*osDv^<"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for e in entries:
        label = e["method"] if e["bits"] == 32 else f"{e['method']} {e['bits']}b"
        ax.scatter(e["size_bytes"] / 1e6, e["bleu"], marker=markers.get(e["method"], "x"),
                   s=160 if e["method"] == "teacher" else 60, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("size on disk (MB, log scale)")
    ax.set_ylabel("BLEU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)


def write_report(pipeline):
    entries = collect(pipeline)
    for name, text in (("results.json", json.dumps(entries, indent=1)),
                       ("report.md", render(pipeline, entries))):
        tmp = pipeline.path(name + ".tmp")
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, pipeline.path(name))
    plot(entries, pipeline.path("bleu_vs_size.png"))

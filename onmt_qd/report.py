"""A recipe's report: results.json (test sets, one entry per evaluated model, the
claims table), report.md (the paper's tables and its claims judged on this run, each
number traceable to its config, log and evaluated file) and bleu_vs_size.png."""
import json
import os
import re

from onmt_qd.datasets import count_lines
from onmt_qd.fileio import atomic_output

METHODS = ["teacher", "student_fp", "student_distilled_fp", "pm_quantization",
           "quantized_distillation", "differentiable_quantization", "quantized_normal_loss"]

BEST_2BIT = "best 2-bit student"
TWO_BIT = ("quantized_distillation_2bit", "differentiable_quantization_2bit")

# (id, the paper's claim, kind, model, compared with, the goal of issue 11 as (text, test
# of the BLEU difference or speed ratio)). Kinds: "better": the model's BLEU exceeds the
# other's by more than the noise margin; "close": it is at most the margin below it;
# "speed": sentences per second over the other's, judged by the goal's ratio (BLEU noise
# does not apply). The 4-bit row also needs a file >= 10x smaller than the teacher's fp32
# weights.
CLAIMS = [
    ("teacher_vs_student", "the teacher is better than the undistilled student", "better",
     "teacher", "student_fp",
     ("teacher >= undistilled student + 1.5 BLEU", lambda d: d >= 1.5)),
    ("distillation_fp", "distillation improves the full-precision student", "better",
     "student_distilled_fp", "student_fp",
     ("distilled > undistilled (full precision)", lambda d: d > 0)),
    ("distillation_4bit", "distillation improves the 4-bit student", "better",
     "quantized_distillation_4bit", "quantized_normal_loss_4bit",
     ("distilled > undistilled (4 bits)", lambda d: d > 0)),
    ("qd_vs_pm_4bit", "quantized distillation beats PM quantization at 4 bits", "better",
     "quantized_distillation_4bit", "pm_quantization_4bit",
     ("4-bit quantized distillation >= PM 4-bit", lambda d: d >= 0)),
    ("qd_vs_pm_2bit", "quantized distillation beats PM quantization at 2 bits", "better",
     "quantized_distillation_2bit", "pm_quantization_2bit", None),
    ("best_2bit_vs_pm", "the best 2-bit student beats PM quantization at 2 bits", "better",
     BEST_2BIT, "pm_quantization_2bit",
     ("best 2-bit >= PM 2-bit + 2 BLEU", lambda d: d >= 2)),
    ("qd_4bit_vs_teacher", "the 4-bit quantized-distilled student reaches the teacher "
     "at >= 10x compression", "close", "quantized_distillation_4bit", "teacher",
     ("within 1.0 BLEU of the teacher, file >= 10x smaller than its fp32 weights",
      lambda d: d >= -1.0)),
    ("best_2bit_vs_teacher", "the best 2-bit student reaches the teacher", "close",
     BEST_2BIT, "teacher",
     ("best 2-bit within 3 BLEU of the teacher", lambda d: d >= -3.0)),
    ("speed", "the 1-layer student translates faster than the teacher, in proportion to "
     "the depth reduction", "speed", "student_fp", "teacher",
     ("student >= 1.8x the teacher's sentences per second", lambda r: r >= 1.8)),
]
MIN_SIZE_RATIO = 10
FP32_BYTES = 4
NOT_MEASURED = "not measured"


def fp32_bytes(entry):
    """Size of a model's weights in fp32: what its compression ratio is measured against."""
    return entry["n_params"] * FP32_BYTES


def best_2bit(by_name):
    """The 2-bit student with the best pooled BLEU: the paper's best of both methods."""
    measured = [by_name[n] for n in TWO_BIT if by_name.get(n, {}).get("bleu") is not None]
    return max(measured, key=lambda m: m["bleu"], default=None)


def _verdict(kind, difference, margin):
    if kind == "close":
        return "holds" if difference >= -margin else "does not hold"
    if difference > margin:
        return "holds"
    return "within noise" if difference >= -margin else "does not hold"


def _claim_row(claim, by_name, margin):
    key, text, kind, model_name, other_name, goal = claim
    model = best_2bit(by_name) if model_name == BEST_2BIT else by_name.get(model_name)
    other = by_name.get(other_name)
    row = {"id": key, "claim": text, "model": model["name"] if model else model_name,
           "against": other_name, "numbers": {}, "verdict": NOT_MEASURED, "per_set": {},
           "goal": goal[0] if goal else None, "goal_met": NOT_MEASURED if goal else None}
    metric = "sentences_per_second" if kind == "speed" else "bleu"
    for entry in (model, other):
        if entry and entry.get(metric) is not None:
            row["numbers"][entry["name"]] = entry[metric]
    if len(row["numbers"]) < 2:
        return row
    if kind == "speed":
        ratio = model[metric] / other[metric]
        row["numbers"]["ratio"] = round(ratio, 2)
        row["verdict"] = "holds" if goal[1](ratio) else "does not hold"
        row["goal_met"] = "met" if goal[1](ratio) else "not met"
        row["per_set"] = {"pooled": row["verdict"]}  # one timed run over every set
        return row
    difference = model["bleu"] - other["bleu"]
    row["numbers"]["difference"] = round(difference, 2)
    small_enough = True
    if key == "qd_4bit_vs_teacher":
        ratio = fp32_bytes(other) / model["size_bytes"]
        row["numbers"]["size_ratio"] = round(ratio, 1)
        small_enough = ratio >= MIN_SIZE_RATIO
    row["verdict"] = _verdict(kind, difference, margin) if small_enough else "does not hold"
    if goal:
        row["goal_met"] = "met" if goal[1](difference) and small_enough else "not met"
    for test_set, scores in model.get("test_sets", {}).items():
        if test_set in other.get("test_sets", {}):
            set_difference = scores["bleu"] - other["test_sets"][test_set]["bleu"]
            row["per_set"][test_set] = _verdict(kind, set_difference, margin) \
                if small_enough else "does not hold"
    return row


def claims(models, margin):
    """The paper's claims judged on one run: a row per claim with the numbers that test
    it, a verdict against the noise margin (BLEU) and the issue's goal, met or not;
    a claim whose models were not evaluated is "not measured", never passed."""
    by_name = {m["name"]: m for m in models}
    return [_claim_row(claim, by_name, margin) for claim in CLAIMS]


def method_and_bits(name):
    match = re.match(r"(.+)_(\d)bit$", name)
    if match:
        return match.group(1), int(match.group(2))
    return name, 32


def per_set_scores(hypotheses, test_sets):
    """BLEU and chrF of each test set, from the translations of their concatenation."""
    from onmt_qd.evaluate.metrics import bleu_chrf, read_lines

    scores, start = {}, 0
    for test_set, files in test_sets.items():
        references = read_lines(files["tgt"])
        bleu, chrf, _, _ = bleu_chrf(hypotheses[start:start + len(references)], references)
        scores[test_set] = {"bleu": round(bleu, 2), "chrf": round(chrf, 2),
                            "sentences": len(references)}
        start += len(references)
    if start != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} translations for {start} test sentences")
    return scores


def collect(pipeline):
    """One entry per model: bleu, chrf, ppl and speed over all test sets pooled (the
    single set when there is one), per-set BLEU and chrF under test_sets."""
    from onmt_qd.evaluate.metrics import read_lines

    test_sets = pipeline.test_sets()
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
                 "test_sets": per_set_scores(read_lines(pipeline.path("eval", f"{name}.hyp")),
                                             test_sets),
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


def _numbers(row):
    return ", ".join(f"{k} {v}" for k, v in row["numbers"].items()) or "-"


def render_claims(rows, margin, test_sets):
    sets = ", ".join(test_sets)
    lines = ["## The paper's claims on this run", "",
             f"BLEU pooled over {sets}. A claim holds only by more than the noise margin of "
             f"{margin} BLEU (the profile's `noise_bleu`: the spread of the same student "
             "across runs); \"within noise\" means neither way. Speed: sentences per second "
             "of the translation itself (model loading and one warm-up batch excluded), same "
             "beam and batch, measured once on the pooled test sets. The goals are issue "
             "11's thresholds, judged apart from the noise margin: a 2-bit student 2.9 "
             "BLEU under the teacher does not hold \"reaches the teacher\" yet meets "
             "\"within 3 BLEU\".", ""]
    table = [[r["claim"], _numbers(r), r["verdict"],
              ", ".join(s for s, v in r["per_set"].items() if v == "holds") or "-",
              r["goal"] or "-", r["goal_met"] or "-"] for r in rows]
    return lines + [_table(["claim", "numbers", f"verdict (margin {margin})", "holds on",
                            "issue 11's goal", "goal met"], table), ""]


def render(pipeline, entries, claim_rows):
    by_name = {e["name"]: e for e in entries}
    teacher = by_name["teacher"]
    teacher_fp32 = fp32_bytes(teacher)
    test_sets = pipeline.test_sets()
    named = ", ".join(f"{n} (`{files['src']}`)" for n, files in test_sets.items())
    out = [f"# {pipeline.name} ({pipeline.profile.name} profile)", "",
           f"Test sets: {named}; "
           "BLEU, chrF, perplexity and speed are over all of them pooled (one corpus), "
           "BLEU per set in its own table. BLEU and chrF: sacrebleu on "
           f"detokenized output, beam 5 (`{teacher['bleu_signature']}`). Perplexity: the "
           "reference, teacher-forced. Size: bytes on disk of the evaluated file (MB = 10^6 "
           "bytes); quantized models are evaluated from their compressed `.qdz` file. "
           "Every row names its config (`configs/`), log (`logs/`) and file (`models/`).", ""]
    out += render_claims(claim_rows, pipeline.profile.noise_bleu, test_sets)
    out += ["## BLEU per test set", "",
            _table(["model"] + list(test_sets) + ["pooled"],
                   [[e["name"]] + [e["test_sets"][s]["bleu"] for s in test_sets] + [e["bleu"]]
                    for e in entries]), ""]
    out += ["## Full-precision models", ""]
    rows = []
    for e in entries:
        if e["bits"] == 32:
            rows.append([e["name"], e["ppl"], e["bleu"], e["chrf"], e["n_params"],
                         _mb(fp32_bytes(e)), _mb(e["size_bytes"]), e["path"]])
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


def shipped_bytes(entry):
    """What a user ships: the compressed file of a quantized model, the fp32 weights of a
    full-precision one (its checkpoint also holds optimizer state: 3x the weights with
    Adam)."""
    return fp32_bytes(entry) if entry["bits"] == 32 else entry["size_bytes"]


def plot(entries, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = dict(zip(METHODS, "*osDv^<"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for e in entries:
        label = e["method"] if e["bits"] == 32 else f"{e['method']} {e['bits']}b"
        ax.scatter(shipped_bytes(e) / 1e6, e["bleu"], marker=markers.get(e["method"], "x"),
                   s=160 if e["method"] == "teacher" else 60, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("MB, log scale: .qdz file on disk; fp32 weights for full precision")
    ax.set_ylabel("BLEU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_output(path) as temporary:
        fig.savefig(temporary, dpi=120, format="png")


def write_report(pipeline):
    entries = collect(pipeline)
    claim_rows = claims(entries, pipeline.profile.noise_bleu)
    results = {"test_sets": {n: {**files, "sentences": count_lines(files["tgt"])}
                             for n, files in pipeline.test_sets().items()},
               "noise_bleu": pipeline.profile.noise_bleu, "models": entries, "claims": claim_rows}
    for name, text in (("results.json", json.dumps(results, indent=1)),
                       ("report.md", render(pipeline, entries, claim_rows))):
        with atomic_output(pipeline.path(name)) as temporary, open(temporary, "w") as handle:
            handle.write(text)
    plot(entries, pipeline.path("bleu_vs_size.png"))

"""report.md: the paper's tables and its claims judged on this run, each number
traceable to its config, log and evaluated file."""
from onmt_qd.recipe.claims import fp32_bytes
from onmt_qd.recipe.identity import TEACHER, ModelId


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
    several = len({r.get("family") for r in rows}) > 1
    table = [([r["family"]] if several else []) +
             [r["claim"], _numbers(r), r["verdict"],
              ", ".join(s for s, v in r["per_set"].items() if v == "holds") or "-",
              r["goal"] or "-", r["goal_met"] or "-"] for r in rows]
    header = (["students"] if several else []) + [
        "claim", "numbers", f"verdict (margin {margin})", "holds on", "issue 11's goal",
        "goal met"]
    return lines + [_table(header, table), ""]


def render(title, test_sets, entries, claim_rows, margin):
    """The report's text; ``test_sets`` maps each set's name to its files, in the order
    they were pooled."""
    by_id = {ModelId.of(e): e for e in entries}
    teacher = by_id[TEACHER]
    teacher_fp32 = fp32_bytes(teacher)
    named = ", ".join(f"{n} (`{files['src']}`)" for n, files in test_sets.items())
    out = [f"# {title}", "",
           f"Test sets: {named}; "
           "BLEU, chrF, perplexity and speed are over all of them pooled (one corpus), "
           "BLEU per set in its own table. BLEU and chrF: sacrebleu on "
           f"detokenized output, beam 5 (`{teacher['bleu_signature']}`). Perplexity: the "
           "reference, teacher-forced. Size: bytes on disk of the evaluated file (MB = 10^6 "
           "bytes); quantized models are evaluated from their compressed `.qdz` file. "
           "Every row names its config (`configs/`), log (`logs/`) and file (`models/`).", ""]
    out += render_claims(claim_rows, margin, test_sets)
    out += ["## BLEU per test set", "",
            _table(["model"] + list(test_sets) + ["pooled"],
                   [[e["name"]] + [e["test_sets"][s]["bleu"] for s in test_sets] + [e["bleu"]]
                    for e in entries]), ""]
    out += ["## Full-precision models", ""]
    rows = [[e["name"], e["ppl"], e["bleu"], e["chrf"], e["n_params"], _mb(fp32_bytes(e)),
             _mb(e["size_bytes"]), e["path"]] for e in entries if not ModelId.of(e).quantized]
    out += [_table(["model", "ppl", "BLEU", "chrF", "params", "fp32 weights MB",
                    "checkpoint MB", "file"], rows), ""]
    out += ["## Quantized students", "",
            f"Ratio: fp32 weights of the teacher ({_mb(teacher_fp32)} MB) over the file on disk.",
            ""]
    quantized = sorted((e for e in entries if ModelId.of(e).quantized),
                       key=lambda e: (str(e["family"]), e["bits"], e["method"]))
    rows = [[ModelId.of(e).label, e["bits"], e["ppl"], e["bleu"], e["chrf"],
             _mb(e["size_bytes"]), f"{teacher_fp32 / e['size_bytes']:.1f}x", e["path"]]
            for e in quantized]
    out += [_table(["model", "bits", "ppl", "BLEU", "chrF", "size MB", "vs teacher fp32",
                    "file"], rows), ""]
    rows = [[e["name"], e["bits"], f"{report['mean_code_bits']:.3f}",
             f"{report['entropy_bits']:.3f}", f"{e['bits'] + 64 / 256:.2f}",
             _mb(report["paper_formula_bytes"]), _mb(e["size_bytes"])]
            for e in entries if (report := e.get("size_report"))]
    if rows:
        out += ["## Huffman coding of the quantized weights", "",
                "Mean code bits per quantized weight vs the entropy bound and fixed width "
                "(b + 0.25 bits with two fp32 scales per 256-bucket); sizes by the paper's "
                "formula (docs/method.md §7) and on disk.", "",
                _table(["model", "bits", "mean code bits", "entropy", "fixed width bits",
                        "paper formula MB", "on disk MB"], rows), ""]
    rows = []
    for normal in sorted((i for i in by_id if i.method == "quantized_normal_loss"),
                         key=lambda i: (str(i.family), i.bits)):
        pair = [by_id.get(ModelId("quantized_distillation", normal.bits, normal.family)),
                by_id[normal]]
        rows += [[ModelId.of(e).label, e["bits"], e["ppl"], e["bleu"]] for e in pair if e]
    if rows:
        out += ["## Distillation vs normal loss when quantizing", "",
                _table(["model", "bits", "ppl", "BLEU"], rows), ""]
    out += ["![BLEU vs size](bleu_vs_size.png)", ""]
    return "\n".join(out)

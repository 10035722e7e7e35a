"""report.md: the paper's tables and its claims judged on this run, each number
traceable to its config, log and evaluated file."""
from onmt_qd.recipe.claims import (MIN_TEACHER_BLEU, broken_teacher, fp32_bytes, run_label,
                                   run_of, speed_metric)
from onmt_qd.recipe.deployment import REFERENCE
from onmt_qd.recipe.identity import (QUANTIZED_DISTILLATION, QUANTIZED_NORMAL_LOSS, TEACHER,
                                     ModelId)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _mb(n):
    return f"{n / 1e6:.2f}"


def _numbers(row):
    if "not_measured_because" in row:
        return f"not measured: {row['not_measured_because']}"
    if "cannot_judge_because" in row:
        numbers = ", ".join(f"{k} {v}" for k, v in row["numbers"].items())
        return f"{numbers}; cannot judge: {row['cannot_judge_because']}"
    return ", ".join(f"{k} {v}" for k, v in row["numbers"].items()) or "-"


def render_claims(rows, margin, test_sets):
    sets = ", ".join(test_sets)
    lines = ["## The paper's claims on this run", "",
             f"BLEU pooled over {sets}. A claim holds only by more than the noise margin of "
             f"{margin} BLEU (the profile's `noise_bleu`: the spread of the same student "
             "across runs); \"within noise\" means neither way. Speed: output words (sentences, "
             "in results of an older onmt_qd) per second of the translation itself (model "
             "loading and one warm-up batch excluded), same beam and batch, measured once "
             "on the test sets. The goals are issue 11's thresholds, judged apart from the "
             "noise margin: a 2-bit student 2.9 BLEU under the teacher does not hold "
             "\"reaches the teacher\" yet meets \"within 3 BLEU\". The deployed claim "
             "(issue 22's) compares the student's "
             "deployment run with the teacher in fp32 through OpenNMT-py, the model a user "
             "starts from, both timed one at a time in the deploy stage (see \"Deployed "
             "models\"); speed_ratio_vs_deployed_teacher is the ratio to the teacher "
             "deployed the same way. Speeds are compared only between outputs of comparable "
             "length (a model that stops early is fast); no claim is judged when the "
             "teacher looks broken "
             f"(BLEU under {MIN_TEACHER_BLEU}, not above copying the source, or an output "
             "length out of proportion): \"cannot judge\" says why. A \">=\" goal met "
             "only by equal scores is \"within noise\".", ""]
    several = len({r.get("family") for r in rows}) > 1
    table = [([r["family"]] if several else []) +
             [r["claim"], _numbers(r), r["verdict"],
              ", ".join(s for s, v in r["per_set"].items() if v == "holds") or "-",
              r["goal"] or "-", r["goal_met"] or "-"] for r in rows]
    header = (["students"] if several else []) + [
        "claim", "numbers", f"verdict (margin {margin})", "holds on", "issue 11's goal",
        "goal met"]
    return lines + [_table(header, table), ""]


def broken_warning(teacher, copy_bleu):
    """The report's first lines when its teacher looks broken (claims.broken_teacher)."""
    why = broken_teacher(teacher, copy_bleu)
    if why is None:
        return []
    return [f"**The models look broken, so no claim is judged**: {why}. Every student "
            "learned from it; retrain it longer (more epochs, or a larger corpus) before "
            "reading anything into the tables below.", ""]


def render(title: str, test_sets: dict, entries: list, claim_rows: list, margin: float,
           copy_bleu: float | None = None) -> str:
    """The report's text; ``test_sets`` maps each set's name to its files, in the order
    they were pooled; ``copy_bleu``: BLEU of the source copied (the trivial baseline)."""
    by_id = {ModelId.of(e): e for e in entries}
    teacher = by_id[TEACHER]
    out = [*_header(title, test_sets, teacher, copy_bleu), *busy_warning(entries),
           *render_claims(claim_rows, margin, test_sets), *_bleu_per_set(entries, test_sets),
           *_full_precision(entries), *_quantized(entries, fp32_bytes(teacher)),
           *_huffman_coding(entries), *_distillation_vs_normal_loss(by_id),
           *render_deployed(entries, test_sets), "![BLEU vs size](bleu_vs_size.png)", ""]
    return "\n".join(out)


def _header(title, test_sets, teacher, copy_bleu):
    """The title, a broken teacher's warning, and how every number below was measured."""
    named = ", ".join(f"{n} (`{files['src']}`)" for n, files in test_sets.items())
    return [f"# {title}", "", *broken_warning(teacher, copy_bleu),
            f"Test sets: {named}; each is translated in a run of its own (its BLEU per "
            "set, in its own table, is what `onmt_qd_eval` gives on it alone); BLEU, chrF, "
            "perplexity and speed are over all of them pooled. BLEU and chrF: sacrebleu on "
            f"detokenized output, beam 5 (`{teacher['bleu_signature']}`). Perplexity: the "
            "reference, teacher-forced. Size: bytes on disk of the evaluated file (MB = 10^6 "
            "bytes); quantized models are evaluated from their compressed `.qdz` file. "
            "Every row names its config (`configs/`), log (`logs/`) and file (`models/`).", ""]


def _bleu_per_set(entries, test_sets):
    return ["## BLEU per test set", "",
            _table(["model"] + list(test_sets) + ["pooled"],
                   [[e["name"]] + [e["test_sets"][s]["bleu"] for s in test_sets] + [e["bleu"]]
                    for e in entries]), ""]


def _full_precision(entries):
    rows = [[e["name"], e["ppl"], e["bleu"], e["chrf"], e["n_params"], _mb(fp32_bytes(e)),
             _mb(e["size_bytes"]), e["path"]] for e in entries if not ModelId.of(e).quantized]
    return ["## Full-precision models", "",
            _table(["model", "ppl", "BLEU", "chrF", "params", "fp32 weights MB",
                    "checkpoint MB", "file"], rows), ""]


def _quantized(entries, teacher_fp32):
    """The quantized students, by family, width and method, with their compression."""
    quantized = sorted((e for e in entries if ModelId.of(e).quantized),
                       key=lambda e: (str(e["family"]), e["bits"], e["method"]))
    rows = [[ModelId.of(e).label, e["bits"], e["ppl"], e["bleu"], e["chrf"],
             _mb(e["size_bytes"]), f"{teacher_fp32 / e['size_bytes']:.1f}x", e["path"]]
            for e in quantized]
    return ["## Quantized students", "",
            f"Ratio: fp32 weights of the teacher ({_mb(teacher_fp32)} MB) over the file on disk.",
            "", _table(["model", "bits", "ppl", "BLEU", "chrF", "size MB", "vs teacher fp32",
                        "file"], rows), ""]


def _huffman_coding(entries):
    """The compressed files' code lengths against the entropy and fixed-width bounds."""
    rows = [[e["name"], e["bits"], f"{report['mean_code_bits']:.3f}",
             f"{report['entropy_bits']:.3f}", f"{e['bits'] + 64 / 256:.2f}",
             _mb(report["paper_formula_bytes"]), _mb(e["size_bytes"])]
            for e in entries if (report := e.get("size_report"))]
    if not rows:
        return []
    return ["## Huffman coding of the quantized weights", "",
            "Mean code bits per quantized weight vs the entropy bound and fixed width "
            "(b + 0.25 bits with two fp32 scales per 256-bucket); sizes by the paper's "
            "formula (docs/method.md §7) and on disk.", "",
            _table(["model", "bits", "mean code bits", "entropy", "fixed width bits",
                    "paper formula MB", "on disk MB"], rows), ""]


def _distillation_vs_normal_loss(by_id):
    """Each width's normal-loss student beside its distilled twin."""
    rows = []
    for normal in sorted((i for i in by_id if i.method == QUANTIZED_NORMAL_LOSS),
                         key=lambda i: (str(i.family), i.bits)):
        pair = [by_id.get(ModelId(QUANTIZED_DISTILLATION, normal.bits, normal.family)),
                by_id[normal]]
        rows += [[ModelId.of(e).label, e["bits"], e["ppl"], e["bleu"]] for e in pair if e]
    if not rows:
        return []
    return ["## Distillation vs normal loss when quantizing", "",
            _table(["model", "bits", "ppl", "BLEU"], rows), ""]


def busy_note(record):
    """A speed's caveat when other processes kept the cores busy while it was timed
    (onmt_qd/machine.py), else ""."""
    machine = record.get("machine") or {}
    if not machine.get("busy"):
        return ""
    return (f" (busy: others used {machine['other_processes_cores']} of "
            f"{machine['cores']} cores)")


def busy_warning(entries):
    """The report's caveat when any of its timings was taken on a busy machine."""
    records = [*entries, *(run for e in entries for run in e.get("runs", []))]
    if not any(busy_note(r) for r in records):
        return []
    return ["**Some speeds were timed while other processes kept the cores busy** (marked "
            "\"busy\"): they understate those models' speed and their ratios are not "
            "comparable; rerun the evaluate and deploy stages on an idle machine to measure "
            "them.", ""]


def _settings(run):
    """The engine's settings that decide its speed."""
    engine = run["engine"]
    threads = (f"{engine['inter_threads']} translators x {engine['intra_threads']} "
               "threads" if "inter_threads" in engine else
               f"{engine['threads']} threads" if engine.get("threads") else "")
    return ", ".join(x for x in (engine["device"], threads, f"beam {run['beam_size']}",
                                 f"batch {run['batch_size']}") if x)


def render_deployed(entries, test_sets):
    """Each model as a user ships and runs it: the deploy stage's runs."""
    reference = run_of(next(e for e in entries if ModelId.of(e) == TEACHER), REFERENCE)
    rows = []
    for entry in entries:
        for run in entry.get("runs", []):
            if run.get("same_run_as"):  # a CTranslate2 teacher, deployed as given: one row
                continue
            if "skipped" in run:
                rows.append([run_label(entry, run), f"skipped: {run['skipped']}", "-"] +
                            ["-"] * len(test_sets) + ["-"] * 6)
                continue
            ratio = "-"
            if reference:
                measure = speed_metric(run, reference)
                ratio = f"{run[measure] / reference[measure]:.2f}x"
            rows.append([run_label(entry, run), _settings(run), _mb(run["size_bytes"])] +
                        [run["test_sets"][s]["bleu"] for s in test_sets] +
                        [run["bleu"], f"{run['sentences_per_second']}{busy_note(run)}",
                         run.get("words_per_second") or "-", run.get("length_ratio") or "-",
                         run.get("total_seconds") or "-", ratio])
    if not rows:
        return []
    return ["## Deployed models", "",
            "Each model as a user ships and runs it, timed in the deploy stage one model at "
            "a time, no other stage running, on every core not kept busy by other "
            "processes when its turn came (fewer with OMP_NUM_THREADS; \"busy\" marks a "
            "speed taken while others used the cores) (per second of the test sets after "
            "one warm-up batch; model loading excluded): a Transformer exported by "
            "`onmt_qd_export` to CTranslate2 int8 and translated from that directory (its "
            "size: the directory); an LSTM, which CTranslate2 does not convert, by "
            "OpenNMT-py with `-precision int8` (torch dynamic quantization of its Linear "
            "and LSTM layers at load time, CPU only; its size: the file it loads); the "
            "teacher also in fp32 through OpenNMT-py, the reference of the last column. "
            "Settings: the device, torch's threads or CTranslate2's translators x threads "
            "each, beam and batch size. Words/s counts output words (sacrebleu's "
            "tokenization), beside the output's length over the references' (a model that "
            "stops early is fast in sentences); the ratio to the teacher is in words/s. "
            "Total s: the whole wait, model loading and warm-up included.", "",
            _table(["model (engine)", "settings", "size MB", *test_sets, "BLEU pooled",
                    "sentences/s", "words/s", "length vs refs", "total s",
                    "vs teacher fp32"], rows), ""]

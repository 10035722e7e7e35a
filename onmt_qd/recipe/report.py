"""A recipe's report: results.json (test sets, one entry per evaluated model, the
claims table), report.md and bleu_vs_size.png, from the evaluate stage's files."""
import json
import os

from onmt_qd.datasets import count_lines
from onmt_qd.fileio import atomic_output
from onmt_qd.recipe.claims import claims
from onmt_qd.recipe.markdown import render
from onmt_qd.recipe.plot import plot


def per_set_scores(hypotheses, test_sets, pooled_references):
    """BLEU and chrF of each test set, from the evaluation's translations of all sets in
    order (each set translated in a run of its own, so these are its scores alone;
    ``pooled_references`` is their concatenation): each set's slice is checked against
    its own references, so a set is never scored against another set's sentences."""
    from onmt_qd.evaluate.metrics import bleu_chrf
    from onmt_qd.fileio import read_text_lines

    pooled = read_text_lines(pooled_references, "references")
    if len(hypotheses) != len(pooled):
        raise ValueError(f"{len(hypotheses)} translations for the {len(pooled)} lines of "
                         f"{pooled_references}")
    scores, start = {}, 0
    for test_set, files in test_sets.items():
        references = read_text_lines(files["tgt"], "references")
        end = start + len(references)
        if pooled[start:end] != references:
            raise ValueError(f"lines {start + 1}-{end} of {pooled_references} are not "
                             f"{files['tgt']}: the pooled test corpus was written in another "
                             "order of test sets; rerun the data stage")
        bleu, chrf, _, _ = bleu_chrf(hypotheses[start:end], references)
        scores[test_set] = {"bleu": round(bleu, 2), "chrf": round(chrf, 2),
                            "sentences": len(references)}
        start = end
    if start != len(pooled):
        raise ValueError(f"{len(pooled)} pooled test sentences, {start} in the test sets")
    return scores


def collect(pipeline):
    """One entry per evaluated model (its identity's keys first): bleu, chrf, ppl and
    speed over all test sets pooled (the single set when there is one), per-set BLEU
    and chrF under test_sets; the deploy stage's runs of it under runs."""
    from onmt_qd.fileio import read_text_lines

    test_sets, pooled = pipeline.test_sets(), pipeline.pooled_test_set()
    entries = []
    for model in pipeline.evaluated:
        name = model.name
        with open(pipeline.path("eval", f"{name}.json")) as handle:
            result = json.load(handle)
        entry = {"name": name, **model.as_dict(),
                 "path": " ".join(os.path.relpath(path, pipeline.work)
                                  for path in pipeline.evaluated_files(model)),
                 "bleu": result["bleu"], "chrf": result["chrf"], "ppl": result["ppl"],
                 "size_bytes": result["size_bytes"], "n_params": result["n_params"],
                 "sentences_per_second": result["sentences_per_second"],
                 "engine": (result.get("engine") or {}).get("name"),
                 **{k: result.get(k) for k in LENGTH_KEYS},
                 "machine": result.get("machine"),
                 "bleu_signature": result["bleu_signature"],
                 "test_sets": per_set_scores(
                     read_text_lines(pipeline.path("eval", f"{name}.hyp"), "translations"),
                     test_sets, pooled["tgt"]),
                 "config": f"configs/{name}.yaml" if os.path.exists(
                     pipeline.path("configs", f"{name}.yaml")) else None,
                 "log": f"logs/{name}.log"}
        entry["runs"] = deployed_runs(pipeline, name, test_sets, pooled["tgt"])
        size_file = pipeline.path("sizes", f"{name}.json")
        if os.path.exists(size_file):
            with open(size_file) as handle:
                entry["size_report"] = json.load(handle)
        entries.append(entry)
    return entries


def deployed_runs(pipeline, name, test_sets, pooled_references):
    """The deploy stage's runs of one model (recipe/deployment.py): engine and settings,
    size on disk, BLEU pooled and per test set (cut from its translations as the
    evaluate stage's are), sentences per second; a skipped run keeps its reason."""
    from onmt_qd.fileio import read_text_lines

    with open(pipeline.path("deployed", f"{name}.json")) as handle:
        runs = json.load(handle)
    kept = []
    for run in runs:
        if "skipped" in run:
            kept.append({k: run[k] for k in ("role", "engine", "skipped")})
            continue
        hypotheses = read_text_lines(pipeline.path("deployed", run["hyp"]), "translations")
        kept.append({**{k: run[k] for k in RUN_KEYS}, "machine": run.get("machine"),
                     **{k: run.get(k) for k in LENGTH_KEYS},
                     **({"same_run_as": run["same_run_as"]} if "same_run_as" in run else {}),
                     "path": os.path.relpath(run["model"], pipeline.work),
                     "test_sets": per_set_scores(hypotheses, test_sets, pooled_references)})
    return kept


RUN_KEYS = ("role", "engine", "beam_size", "batch_size", "size_bytes", "bleu", "chrf",
            "sentences_per_second", "translate_seconds")
# what an evaluation says of its output's length and the whole wait (None in results of
# an onmt_qd before them)
LENGTH_KEYS = ("words_per_second", "words_per_sentence", "length_ratio", "total_seconds")


def copy_bleu(pooled):
    """BLEU of the pooled test source copied as its own translation: the trivial
    baseline a teacher must beat for its run's claims to mean anything."""
    from onmt_qd.evaluate.metrics import bleu_chrf
    from onmt_qd.fileio import read_text_lines

    return bleu_chrf(read_text_lines(pooled["src"], "source"),
                     read_text_lines(pooled["tgt"], "references"))[0]


def write_report(pipeline):
    entries = collect(pipeline)
    margin, test_sets = pipeline.profile.noise_bleu, pipeline.test_sets()
    baseline = copy_bleu(pipeline.pooled_test_set())
    claim_rows = claims(entries, margin, baseline)
    results = {"test_sets": {n: {**files, "sentences": count_lines(files["tgt"])}
                             for n, files in test_sets.items()},
               "noise_bleu": margin, "copy_source_bleu": round(baseline, 2),
               "models": entries, "claims": claim_rows}
    title = f"{pipeline.name} ({pipeline.profile.name} profile)"
    text = render(title, test_sets, entries, claim_rows, margin, baseline)
    for name, text in (("results.json", json.dumps(results, indent=1)), ("report.md", text)):
        with atomic_output(pipeline.path(name)) as temporary, open(temporary, "w") as handle:
            handle.write(text)
    plot(entries, pipeline.path("bleu_vs_size.png"))

"""The paper's claims judged on one run: a row per claim and student family with the
numbers that test it, a verdict against the noise margin (BLEU) and issue 11's goal
(issue 22's for the deployed claim), met or not. A claim whose models were not
evaluated is "not measured", never passed."""
from dataclasses import dataclass

from onmt_qd.recipe.deployment import DEPLOYED, REFERENCE
from onmt_qd.recipe.identity import (DEFAULT_FAMILY, DIFFERENTIABLE_QUANTIZATION,
                                     FULL_PRECISION, PM_QUANTIZATION, QUANTIZED_DISTILLATION,
                                     QUANTIZED_NORMAL_LOSS, STUDENT_DISTILLED_FP, STUDENT_FP,
                                     TEACHER, ModelId)

# A run's claims are judged only when its teacher translates: its BLEU at least this
# and above copying the source (the trivial baseline), its output of a plausible length.
# Under that, every difference between its students is noise (an undertrained teacher's
# run had "4-bit QD >= PM 4-bit" met at 0.0 >= 0.0, and a 208x "speed-up" of a student
# whose output stopped after ~4 tokens).
MIN_TEACHER_BLEU = 5.0
LENGTH_RATIOS = (0.5, 2.0)  # output words over reference words, for a usable model
# speed claims compare models whose outputs are about as long (words per sentence)
COMPARABLE_LENGTH = 1.25
CANNOT_JUDGE = "cannot judge"
MIN_SIZE_RATIO = 10
MIN_DEPLOYED_SPEEDUP = 3  # issue 22: the deployed 4-bit student vs the fp32 teacher
FP32_BYTES = 4
NOT_MEASURED = "not measured"
BEST_2BIT = "best 2-bit student"
TWO_BIT = ((QUANTIZED_DISTILLATION, 2), (DIFFERENTIABLE_QUANTIZATION, 2))


@dataclass(frozen=True)
class Claim:
    """``model`` and ``against`` are (method, bits) of the family's students, TEACHER,
    or BEST_2BIT. Kinds: "better": the model's BLEU exceeds the other's by more than
    the noise margin; "close": it is at most the margin below it (and, with
    ``min_size_ratio``, its file that much smaller than the other's fp32 weights);
    "speed": output words (else sentences) per second over the other's, judged by the
    goal's ratio, at comparable output lengths.
    ``deployed``: the model's deployment run (recipe/deployment.py) against the other's
    fp32 reference run timed with it; ``min_speed_ratio``: a "close" claim holds only
    when its speed is that many times the other's too."""

    id: str
    text: str
    kind: str
    model: object
    against: object
    goal: str | None = None
    goal_test: object = None
    min_size_ratio: float | None = None
    min_speed_ratio: float | None = None
    deployed: bool = False


CLAIMS = [
    Claim("teacher_vs_student", "the teacher is better than the undistilled student", "better",
          TEACHER, (STUDENT_FP, FULL_PRECISION),
          "teacher >= undistilled student + 1.5 BLEU", lambda d: d >= 1.5),
    Claim("distillation_fp", "distillation improves the full-precision student", "better",
          (STUDENT_DISTILLED_FP, FULL_PRECISION), (STUDENT_FP, FULL_PRECISION),
          "distilled > undistilled (full precision)", lambda d: d > 0),
    Claim("distillation_4bit", "distillation improves the 4-bit student", "better",
          (QUANTIZED_DISTILLATION, 4), (QUANTIZED_NORMAL_LOSS, 4),
          "distilled > undistilled (4 bits)", lambda d: d > 0),
    Claim("qd_vs_pm_4bit", "quantized distillation beats PM quantization at 4 bits", "better",
          (QUANTIZED_DISTILLATION, 4), (PM_QUANTIZATION, 4),
          "4-bit quantized distillation >= PM 4-bit", lambda d: d >= 0),
    Claim("qd_vs_pm_2bit", "quantized distillation beats PM quantization at 2 bits", "better",
          (QUANTIZED_DISTILLATION, 2), (PM_QUANTIZATION, 2)),
    Claim("best_2bit_vs_pm", "the best 2-bit student beats PM quantization at 2 bits", "better",
          BEST_2BIT, (PM_QUANTIZATION, 2), "best 2-bit >= PM 2-bit + 2 BLEU", lambda d: d >= 2),
    Claim("qd_4bit_vs_teacher", "the 4-bit quantized-distilled student reaches the teacher "
          "at >= 10x compression", "close", (QUANTIZED_DISTILLATION, 4), TEACHER,
          "within 1.0 BLEU of the teacher, file >= 10x smaller than its fp32 weights",
          lambda d: d >= -1.0, min_size_ratio=MIN_SIZE_RATIO),
    Claim("best_2bit_vs_teacher", "the best 2-bit student reaches the teacher", "close",
          BEST_2BIT, TEACHER, "best 2-bit within 3 BLEU of the teacher", lambda d: d >= -3.0),
    Claim("speed", "the full-precision student translates faster than the teacher", "speed",
          (STUDENT_FP, FULL_PRECISION), TEACHER,
          "student >= 1.8x the teacher's speed (output words/s)", lambda r: r >= 1.8),
    Claim("deployed_4bit_vs_teacher", "the 4-bit student, deployed, translates >= 3x faster "
          "than the teacher at the teacher's BLEU minus 1", "close",
          (QUANTIZED_DISTILLATION, 4), TEACHER,
          "deployed >= 3x the fp32 teacher's speed (output words/s), within 1.0 BLEU of it",
          lambda d: d >= -1.0, min_speed_ratio=MIN_DEPLOYED_SPEEDUP, deployed=True),
]


def fp32_bytes(entry):
    """Size of a model's weights in fp32: what its compression ratio is measured against."""
    return entry["n_params"] * FP32_BYTES


def broken_teacher(teacher, copy_bleu=None):
    """Why the run's teacher looks broken (a sentence naming what to check), or None:
    its BLEU under MIN_TEACHER_BLEU or not above copying the source, or its output
    length implausible."""
    if teacher is None or teacher.get("bleu") is None:
        return None
    problems = []
    if teacher["bleu"] < MIN_TEACHER_BLEU:
        problems.append(f"BLEU {teacher['bleu']} is under {MIN_TEACHER_BLEU}")
    if copy_bleu is not None and teacher["bleu"] <= copy_bleu:
        problems.append(f"BLEU {teacher['bleu']} is not above copying the source "
                        f"({round(copy_bleu, 2)})")
    ratio = teacher.get("length_ratio")
    if ratio is not None and not LENGTH_RATIOS[0] <= ratio <= LENGTH_RATIOS[1]:
        problems.append(f"its output is {ratio} times as long as the references")
    if not problems:
        return None
    return ("the teacher looks broken (" + "; ".join(problems) + "): check how many steps it "
            "trained and its validation perplexity (logs/teacher.log), and its data")


def _length_problem(model, other):
    """Why two models' speeds cannot be compared (an output of implausible length, or
    lengths too far apart: a model that stops early is fast), or None."""
    for entry in (model, other):
        ratio = entry.get("length_ratio")
        if ratio is not None and not LENGTH_RATIOS[0] <= ratio <= LENGTH_RATIOS[1]:
            return (f"{entry['name']}'s output is {ratio} times as long as the references: "
                    "its speed says nothing")
    lengths = [entry.get("words_per_sentence") for entry in (model, other)]
    if None not in lengths and max(lengths) > COMPARABLE_LENGTH * max(min(lengths), 1e-9):
        return (f"outputs of {lengths[0]} and {lengths[1]} words per sentence are not "
                "comparable in speed")
    return None


def _engine_problem(model, other):
    """Why two evaluate-stage speeds compare engines rather than models (a CTranslate2
    teacher against OpenNMT-py students), or None."""
    engines = [entry.get("engine") for entry in (model, other)]
    if None in engines or engines[0] == engines[1]:
        return None
    return (f"{model['name']} translated through {engines[0]} and {other['name']} through "
            f"{engines[1]}: the ratio compares engines, not models (the deployed claim "
            "compares them as shipped)")


def speed_metric(model, other):
    """Output words per second when both runs measured them, else sentences."""
    both = all(entry.get("words_per_second") is not None for entry in (model, other))
    return "words_per_second" if both else "sentences_per_second"


def _goal(claim, difference):
    """met / not met; "within noise" when equal scores alone would meet it (a
    ">= the other" goal at a difference of 0.00)."""
    if round(difference, 2) == 0 and claim.goal_test(0.0) and not claim.goal_test(-0.01):
        return "within noise"
    return "met" if claim.goal_test(difference) else "not met"


def _verdict(kind, difference, margin):
    if kind == "close":
        return "holds" if difference >= -margin else "does not hold"
    if difference > margin:
        return "holds"
    return "within noise" if difference >= -margin else "does not hold"


class FamilyResults:
    """A student family's evaluated models (and the teacher), found by identity."""

    def __init__(self, entries, family):
        self.family = family
        self.by_id = {ModelId.of(e): e for e in entries}

    def find(self, reference):
        if reference == BEST_2BIT:
            measured = [e for e in map(self.find, TWO_BIT) if e and e.get("bleu") is not None]
            return max(measured, key=lambda e: e["bleu"], default=None)
        if reference == TEACHER:
            return self.by_id.get(TEACHER)
        method, bits = reference
        return self.by_id.get(ModelId(method, bits, self.family))


def run_of(entry, role):
    """A model's deploy-stage run of ``role`` (DEPLOYED or REFERENCE), or None."""
    return next((r for r in (entry or {}).get("runs", []) if r["role"] == role), None)


def run_label(entry, run):
    """How a row names a model's run: ``NAME (ENGINE PRECISION)``."""
    return f"{entry['name']} ({run['engine']['name']} {run['engine']['precision']})"


def _as_measured(entry, role):
    """A results entry's run of ``role`` in an entry's shape (its label as the name),
    None when there is none or it was skipped."""
    run = run_of(entry, role)
    if run is None or "skipped" in run:
        return None
    return {**run, "name": run_label(entry, run)}


def _claim_row(claim, results, margin, broken=None):
    """``claim``'s row for one family: its numbers, then its verdict, unless a model is
    not measured or the comparison cannot be judged (``broken``: why the teacher looks
    broken)."""
    model, other, teacher, skipped = _compared(claim, results)
    row = _unjudged_row(claim, results, model, skipped)
    metric = _metric(claim, model, other)
    for entry in (model, other):
        if entry and entry.get(metric) is not None:
            row["numbers"][entry["name"]] = entry[metric]
    if len(row["numbers"]) < 2:
        return row
    why = broken or (_length_problem(model, other)
                     if claim.kind == "speed" or claim.min_speed_ratio else None) or (
        _engine_problem(model, other) if claim.kind == "speed" else None)
    if why:
        return _cannot_judge(row, claim, model, other, why)
    if claim.kind == "speed":
        return _judge_speed(row, claim, model[metric] / other[metric], metric)
    return _judge_bleu(row, claim, model, other, teacher, margin)


def _compared(claim, results):
    """(model, other, teacher, why the model's deployment was skipped): the entries the
    claim compares; a deployed claim's are the model's deployment run and the other's
    fp32 reference run, the teacher (``other``'s entry) kept for its own deployment."""
    model, other = results.find(claim.model), results.find(claim.against)
    if not claim.deployed:
        return model, other, None, None
    skipped = (run_of(model, DEPLOYED) or {}).get("skipped")
    return _as_measured(model, DEPLOYED), _as_measured(other, REFERENCE), other, skipped


def _unjudged_row(claim, results, model, skipped):
    """The claim's row before anything is measured: no numbers, "not measured"."""
    prefix = "" if results.family == DEFAULT_FAMILY else f"{results.family}."
    row = {"id": prefix + claim.id, "family": results.family, "claim": claim.text,
           "model": model["name"] if model else _describe(claim.model, results.family),
           "against": _describe(claim.against, results.family), "numbers": {},
           "verdict": NOT_MEASURED, "per_set": {}, "goal": claim.goal,
           "goal_met": NOT_MEASURED if claim.goal else None}
    if skipped:
        row["not_measured_because"] = skipped
    return row


def _metric(claim, model, other):
    """The number a claim compares: BLEU, or a speed claim's speed_metric."""
    if claim.kind != "speed":
        return "bleu"
    return speed_metric(model, other) if model and other else "sentences_per_second"


def _cannot_judge(row, claim, model, other, why):
    """The row of a claim whose numbers say nothing (``why``), its BLEU difference shown."""
    if claim.kind != "speed":
        row["numbers"]["difference"] = round(model["bleu"] - other["bleu"], 2)
    row.update(verdict=CANNOT_JUDGE, cannot_judge_because=why)
    row["goal_met"] = CANNOT_JUDGE if claim.goal else None
    return row


def _judge_speed(row, claim, ratio, metric):
    """A "speed" claim: held when ``ratio`` meets its goal; one timed run over every set."""
    met = claim.goal_test(ratio)
    row["numbers"]["ratio"] = round(ratio, 2)
    row["numbers"]["measure"] = metric
    row["verdict"] = "holds" if met else "does not hold"
    row["goal_met"] = "met" if met else "not met"
    row["per_set"] = {"pooled": row["verdict"]}
    return row


def _judge_bleu(row, claim, model, other, teacher, margin):
    """A "better" or "close" claim: the BLEU difference against the noise margin and the
    goal, pooled and per set; neither holds when the model misses a required size or
    speed ratio."""
    difference = model["bleu"] - other["bleu"]
    row["numbers"]["difference"] = round(difference, 2)
    small_enough = _small_enough(row, claim, model, other)
    fast_enough = not claim.min_speed_ratio or _speed_ratios(row, model, other, teacher,
                                                             claim.min_speed_ratio)
    required = small_enough and fast_enough
    row["verdict"] = _verdict(claim.kind, difference, margin) if required else "does not hold"
    if claim.goal:
        row["goal_met"] = _goal(claim, difference) if required else "not met"
    row["per_set"] = {test_set: _verdict(claim.kind, set_difference, margin) if required
                      else "does not hold"
                      for test_set, set_difference in _set_differences(model, other)}
    return row


def _small_enough(row, claim, model, other):
    """Whether ``model``'s file is ``claim.min_size_ratio`` times smaller than the
    other's fp32 weights (the ratio goes into the row's numbers); True without one."""
    if not claim.min_size_ratio:
        return True
    ratio = fp32_bytes(other) / model["size_bytes"]
    row["numbers"]["size_ratio"] = round(ratio, 1)
    return ratio >= claim.min_size_ratio


def _set_differences(model, other):
    """(test set, BLEU difference) for each set both models were scored on."""
    theirs = other.get("test_sets", {})
    return [(test_set, scores["bleu"] - theirs[test_set]["bleu"])
            for test_set, scores in model.get("test_sets", {}).items() if test_set in theirs]


def _speed_ratios(row, model, other, teacher, minimum):
    """Whether ``model`` translates ``minimum`` times as many words (else sentences) per
    second as ``other``; the ratio goes into the row's numbers, with the ratio to the
    teacher's own deployment run when it was measured (the gain the engine alone does
    not explain)."""
    metric = speed_metric(model, other)
    ratio = model[metric] / other[metric]
    row["numbers"]["speed_ratio"] = round(ratio, 2)
    row["numbers"]["speed_measure"] = metric
    deployed_teacher = _as_measured(teacher, DEPLOYED)
    if deployed_teacher and deployed_teacher.get(metric):
        row["numbers"]["speed_ratio_vs_deployed_teacher"] = round(
            model[metric] / deployed_teacher[metric], 2)
    return ratio >= minimum


def _describe(reference, family):
    if reference in (BEST_2BIT, TEACHER):
        return reference if reference == BEST_2BIT else TEACHER.name
    return ModelId(*reference, family).name


def claims(entries, margin, copy_bleu=None):
    """Every claim for every student family of ``entries`` (results entries, each with
    its identity's keys), in CLAIMS order within a family; none judged when the teacher
    looks broken (``copy_bleu``: BLEU of the source copied as its translation)."""
    families = list(dict.fromkeys(e["family"] for e in entries if e["family"] is not None))
    broken = broken_teacher(next((e for e in entries if ModelId.of(e) == TEACHER), None),
                            copy_bleu)
    return [_claim_row(claim, FamilyResults(entries, family), margin, broken)
            for family in families or [DEFAULT_FAMILY] for claim in CLAIMS]

"""The claims table's verdicts follow from its numbers: a hand-made results set whose
outcomes are known, judged with a noise margin of 1 BLEU."""
from onmt_qd.recipe.claims import claims
from onmt_qd.recipe.identity import TEACHER, ModelId
from onmt_qd.recipe.markdown import render_claims


def model(name, bleu, per_set=None, size_bytes=1_000_000, n_params=250_000, speed=None,
          family="student"):
    """A results entry; ``name`` is the identity's name in the default family."""
    method, _, bits = name.rpartition("_")
    identity = TEACHER if name == "teacher" else ModelId(method, int(bits[:-3]), family) \
        if bits.endswith("bit") else ModelId(name, family=family)
    assert identity.name == name or family != "student"
    return {"name": identity.name, **identity.as_dict(), "bleu": bleu,
            "size_bytes": size_bytes, "n_params": n_params, "sentences_per_second": speed,
            "test_sets": {s: {"bleu": b} for s, b in (per_set or {}).items()}}


def results():
    return [model("teacher", 33.0, {"flickr": 33.0, "coco": 30.0}, n_params=5_000_000,
                  speed=200.0),
            model("student_fp", 27.0, {"flickr": 27.0, "coco": 29.5}, speed=400.0),
            model("student_distilled_fp", 27.5),
            model("quantized_normal_loss_4bit", 26.0),
            model("quantized_distillation_4bit", 24.5),
            model("pm_quantization_4bit", 24.0),
            model("quantized_distillation_2bit", 15.0),
            model("differentiable_quantization_2bit", 22.0),
            model("pm_quantization_2bit", 18.0)]


def by_id(rows):
    return {r["id"]: r for r in rows}


def test_verdicts_follow_from_the_numbers():
    rows = by_id(claims(results(), margin=1.0))
    expected = {  # id: (verdict, goal)
        "teacher_vs_student": ("holds", "met"),            # +6.0, goal +1.5
        "distillation_fp": ("within noise", "met"),        # +0.5: above 0, not above noise
        "distillation_4bit": ("does not hold", "not met"),  # -1.5
        "qd_vs_pm_4bit": ("within noise", "met"),          # +0.5, goal >= 0
        "qd_vs_pm_2bit": ("does not hold", None),          # -3.0, no goal
        "best_2bit_vs_pm": ("holds", "met"),               # differentiable 22 vs 18: +4
        "qd_4bit_vs_teacher": ("does not hold", "not met"),  # -8.5 (20x smaller)
        "best_2bit_vs_teacher": ("does not hold", "not met"),  # -11
        "speed": ("holds", "met"),                         # 2.0x, goal 1.8x
    }
    assert {k: (r["verdict"], r["goal_met"]) for k, r in rows.items()} == expected
    assert rows["teacher_vs_student"]["numbers"] == {"teacher": 33.0, "student_fp": 27.0,
                                                     "difference": 6.0}
    assert rows["best_2bit_vs_pm"]["model"] == "differentiable_quantization_2bit"
    assert rows["qd_4bit_vs_teacher"]["numbers"]["size_ratio"] == 20.0
    assert rows["speed"]["numbers"]["ratio"] == 2.0
    assert rows["speed"]["per_set"] == {"pooled": "holds"}  # timed once, on every set
    # per set: flickr +6 holds, coco +0.5 is within noise
    assert rows["teacher_vs_student"]["per_set"] == {"flickr": "holds", "coco": "within noise"}


def test_close_to_the_teacher_needs_the_size_ratio_too():
    models = results()
    models[4] = model("quantized_distillation_4bit", 32.5, size_bytes=3_000_000)
    row = by_id(claims(models, margin=1.0))["qd_4bit_vs_teacher"]
    assert row["numbers"]["difference"] == -0.5 and row["numbers"]["size_ratio"] == 6.7
    assert (row["verdict"], row["goal_met"]) == ("does not hold", "not met")
    models[4]["size_bytes"] = 2_000_000
    row = by_id(claims(models, margin=1.0))["qd_4bit_vs_teacher"]
    assert (row["verdict"], row["goal_met"]) == ("holds", "met")


def test_the_margin_decides_what_holds():
    rows = by_id(claims(results(), margin=0.25))
    assert rows["distillation_fp"]["verdict"] == "holds"
    rows = by_id(claims(results(), margin=7.0))
    assert rows["teacher_vs_student"]["verdict"] == "within noise"
    assert rows["teacher_vs_student"]["goal_met"] == "met"  # goals ignore the margin


def test_missing_numbers_say_not_measured_instead_of_passing():
    models = [m for m in results() if m["name"] not in
              ("quantized_normal_loss_4bit", "quantized_distillation_2bit",
               "differentiable_quantization_2bit")]
    models[0]["sentences_per_second"] = None
    rows = by_id(claims(models, margin=1.0))
    for key in ("distillation_4bit", "best_2bit_vs_pm", "best_2bit_vs_teacher", "speed"):
        assert (rows[key]["verdict"], rows[key]["goal_met"]) == ("not measured", "not measured")
    assert rows["qd_vs_pm_2bit"]["verdict"] == "not measured"
    assert rows["teacher_vs_student"]["verdict"] == "holds"
    table = "\n".join(render_claims(list(rows.values()), 1.0, ["flickr"]))
    assert table.count("| not measured |") == 5 + 4  # verdicts, then goals


def test_plot_sizes_are_what_a_user_ships():
    """A full-precision model is plotted at its fp32 weights, not its checkpoint (which
    also holds the optimizer's state); a quantized one at its compressed file."""
    from onmt_qd.recipe.plot import shipped_bytes

    fp = {"bits": 32, "n_params": 1_000_000, "size_bytes": 12_000_000}
    quantized = {"bits": 4, "n_params": 1_000_000, "size_bytes": 550_000}
    assert shipped_bytes(fp) == 4_000_000
    assert shipped_bytes(quantized) == 550_000


def test_each_student_family_is_judged_on_its_own_models():
    """Two families share the teacher; each gets every claim, named by family, and a
    model of one family never stands in for the other's."""
    transformer = [model(m["name"], m["bleu"] - 2, per_set={"flickr": m["bleu"] - 2},
                         family="transformer", speed=300.0 if m["name"] == "student_fp" else None)
                   for m in results()[1:] if m["name"] != "differentiable_quantization_2bit"]
    rows = claims(results() + transformer, margin=1.0)
    ids = [r["id"] for r in rows]
    assert len(ids) == 2 * 9 and ids[9:] == ["transformer." + i for i in ids[:9]]
    mine = by_id(rows)
    assert mine["transformer.teacher_vs_student"]["numbers"] == {
        "teacher": 33.0, "transformer.student_fp": 25.0, "difference": 8.0}
    # no 2-bit differentiable quantization in this family: its best 2-bit is its own QD
    assert mine["transformer.best_2bit_vs_pm"]["model"] == "transformer.quantized_distillation_2bit"
    assert mine["transformer.speed"]["numbers"]["ratio"] == 1.5
    assert mine["best_2bit_vs_pm"]["model"] == "differentiable_quantization_2bit"
    table = "\n".join(render_claims(rows, 1.0, ["flickr"]))
    assert "| students | claim |" in table and "| transformer | the teacher is better" in table


def test_identity_names_round_trip_through_results():
    for identity in (TEACHER, ModelId("student_fp"), ModelId("pm_quantization", 2),
                     ModelId("quantized_distillation", 4, "transformer")):
        entry = {"name": identity.name, **identity.as_dict()}
        assert ModelId.of(entry) == identity
    assert ModelId("quantized_distillation", 4).name == "quantized_distillation_4bit"
    assert ModelId("pm_quantization", 2, "transformer").name == "transformer.pm_quantization_2bit"
    assert ModelId("pm_quantization", 2, "transformer").label == "transformer pm_quantization 2b"

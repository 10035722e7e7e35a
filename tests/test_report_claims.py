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
        "deployed_4bit_vs_teacher": ("not measured", "not measured"),  # no deploy stage
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
    assert table.count("| not measured |") == 6 + 5  # verdicts, then goals


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
    n = len(ids) // 2
    assert len(ids) == 2 * n and ids[n:] == ["transformer." + i for i in ids[:n]]
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


def run(role, bleu, per_set, speed, engine="OpenNMT-py", precision="int8", **settings):
    """A deploy-stage run (recipe/deployment.py) as the report keeps it."""
    return {"role": role, "engine": {"name": engine, "precision": precision, "device": "cpu",
                                     **(settings or {"threads": 2})},
            "beam_size": 5, "batch_size": 64, "size_bytes": 500_000, "bleu": bleu,
            "sentences_per_second": speed,
            "test_sets": {s: {"bleu": b} for s, b in per_set.items()}}


def deployed_results(student_speed=330.0, family="student"):
    """results() with the deploy stage's runs: the teacher in fp32 (100 sentences/s) and
    int8 (150), the 4-bit quantized-distilled student int8 at 32.5 BLEU (flickr -0.5,
    coco -1.5 from the teacher)."""
    models = results()
    models[0]["runs"] = [run("reference", 33.0, {"flickr": 33.0, "coco": 30.0}, 100.0,
                             precision="fp32"),
                         run("deployed", 32.9, {"flickr": 33.0, "coco": 29.8}, 150.0)]
    models[4]["runs"] = [run("deployed", 32.5, {"flickr": 32.5, "coco": 28.5}, student_speed)]
    return models


def test_deployed_claim_needs_the_speed_and_the_teachers_bleu_minus_1():
    row = by_id(claims(deployed_results(), margin=1.0))["deployed_4bit_vs_teacher"]
    assert row["model"] == "quantized_distillation_4bit (OpenNMT-py int8)"
    assert row["numbers"] == {"quantized_distillation_4bit (OpenNMT-py int8)": 32.5,
                              "teacher (OpenNMT-py fp32)": 33.0, "difference": -0.5,
                              "speed_ratio": 3.3, "speed_measure": "sentences_per_second",
                              "speed_ratio_vs_deployed_teacher": 2.2}
    assert (row["verdict"], row["goal_met"]) == ("holds", "met")
    assert row["per_set"] == {"flickr": "holds", "coco": "does not hold"}  # -0.5, -1.5
    row = by_id(claims(deployed_results(student_speed=290.0), margin=1.0))[
        "deployed_4bit_vs_teacher"]  # 2.9x: fails on every set, whatever the BLEU
    assert row["numbers"]["speed_ratio"] == 2.9
    assert (row["verdict"], row["goal_met"]) == ("does not hold", "not met")
    assert set(row["per_set"].values()) == {"does not hold"}
    table = "\n".join(render_claims([row], 1.0, ["flickr", "coco"]))
    assert "speed_ratio 2.9" in table and "| does not hold |" in table


def test_a_skipped_deployment_is_not_measured_with_its_reason():
    models = deployed_results()
    models[4]["runs"] = [{"role": "deployed", "skipped": "CPU kernels only",
                          "engine": {"name": "OpenNMT-py", "precision": "int8"}}]
    row = by_id(claims(models, margin=1.0))["deployed_4bit_vs_teacher"]
    assert (row["verdict"], row["goal_met"]) == ("not measured", "not measured")
    table = "\n".join(render_claims([row], 1.0, ["flickr"]))
    assert "| not measured: CPU kernels only |" in table


def test_each_family_is_judged_on_its_own_deployment():
    """A Transformer family's 4-bit student deploys through CTranslate2; the LSTM
    family's through OpenNMT-py; both against the one fp32 teacher run."""
    transformer = model("quantized_distillation_4bit", 30.0, family="transformer")
    transformer["runs"] = [run("deployed", 32.2, {"flickr": 32.2, "coco": 29.5}, 500.0,
                               engine="CTranslate2", inter_threads=2, intra_threads=1)]
    rows = by_id(claims(deployed_results(student_speed=200.0) + [transformer], margin=1.0))
    mine = rows["transformer.deployed_4bit_vs_teacher"]
    assert mine["model"] == "transformer.quantized_distillation_4bit (CTranslate2 int8)"
    assert mine["numbers"]["speed_ratio"] == 5.0 and mine["verdict"] == "holds"
    assert rows["deployed_4bit_vs_teacher"]["verdict"] == "does not hold"  # 2.0x


def test_deployed_table_has_every_run_with_its_settings():
    from onmt_qd.recipe.markdown import render_deployed

    models = deployed_results()
    models[1]["runs"] = [run("deployed", 27.0, {"flickr": 27.0, "coco": 26.0}, 210.0,
                             engine="CTranslate2", inter_threads=2, intra_threads=1)]
    models[2]["runs"] = [{"role": "deployed", "skipped": "CPU kernels only",
                          "engine": {"name": "OpenNMT-py", "precision": "int8"}}]
    table = "\n".join(render_deployed(models, {"flickr": {}, "coco": {}}))
    assert "| model (engine) | settings | size MB | flickr | coco | BLEU pooled |" in table
    assert "| teacher (OpenNMT-py fp32) | cpu, 2 threads, beam 5, batch 64 | 0.50 | 33.0 | " \
        "30.0 | 33.0 | 100.0 | - | - | - | 1.00x |" in table
    assert "| student_fp (CTranslate2 int8) | cpu, 2 translators x 1 threads, beam 5, " \
        "batch 64 | 0.50 | 27.0 | 26.0 | 27.0 | 210.0 | - | - | - | 2.10x |" in table
    assert "| quantized_distillation_4bit (OpenNMT-py int8) |" in table
    assert "| student_distilled_fp (OpenNMT-py int8) | skipped: CPU kernels only |" in table


def test_deployment_path_follows_the_model_and_the_device():
    """CTranslate2 for a SentencePiece Transformer (CPU or GPU); OpenNMT-py int8 for an
    LSTM on the CPU; a reason, never a crash, where neither applies."""
    from argparse import Namespace

    from onmt_qd.recipe.deployment import deployment

    kinds = {"encoder_type": "transformer", "decoder_type": "transformer"}
    transformer = Namespace(**kinds, transforms=["sentencepiece"], src_subword_model="s",
                            tgt_subword_model="s")
    lstm = Namespace(encoder_type="brnn", decoder_type="rnn")
    assert deployment(transformer, gpu=True) == deployment(transformer, gpu=False) == \
        ("CTranslate2", None)
    assert deployment(lstm, gpu=False) == ("OpenNMT-py", None)
    engine, reason = deployment(lstm, gpu=True)
    assert engine == "OpenNMT-py" and "CPU kernels only" in reason
    engine, reason = deployment(Namespace(**kinds), gpu=False)  # a word vocabulary
    assert engine == "CTranslate2" and "sentencepiece" in reason


def test_deployed_runs_are_cut_into_the_test_sets_in_their_order(tmp_path):
    """Per-set BLEU of a deployed run comes from its translations of the pooled corpus,
    cut where each set's references are; a skipped run keeps its reason."""
    import json

    import pytest

    from onmt_qd.recipe.report import deployed_runs

    class Work:
        work = str(tmp_path)

        def path(self, *parts):
            return str(tmp_path.joinpath(*parts))

    sets = {"b": ["a dog runs .", "two men ."], "a": ["the sky is blue ."]}
    files = {}
    for name, lines in sets.items():
        (tmp_path / f"{name}.en").write_text("".join(f"{line}\n" for line in lines))
        files[name] = {"tgt": str(tmp_path / f"{name}.en")}
    (tmp_path / "pooled.en").write_text("a dog runs .\ntwo men .\nthe sky is blue .\n")
    (tmp_path / "deployed").mkdir()
    (tmp_path / "deployed" / "m.deployed.hyp").write_text("a dog runs .\nmen .\nthe sky is blue .\n")
    result = {"role": "deployed", "engine": {"name": "CTranslate2", "precision": "int8"},
              "beam_size": 5, "batch_size": 64, "size_bytes": 9, "bleu": 70.0, "chrf": 80.0,
              "sentences_per_second": 10.0, "translate_seconds": 0.3,
              "model": str(tmp_path / "deployed" / "m.ct2"), "hyp": "m.deployed.hyp"}
    skipped = {"role": "deployed", "engine": {"name": "OpenNMT-py", "precision": "int8"},
               "skipped": "CPU kernels only"}
    (tmp_path / "deployed" / "m.json").write_text(json.dumps([result, skipped]))
    runs = deployed_runs(Work(), "m", files, str(tmp_path / "pooled.en"))
    assert runs[0]["path"] == "deployed/m.ct2" and runs[1] == skipped
    assert [(n, s["sentences"]) for n, s in runs[0]["test_sets"].items()] == [("b", 2), ("a", 1)]
    assert runs[0]["test_sets"]["a"]["bleu"] == 100.0 > runs[0]["test_sets"]["b"]["bleu"]
    with pytest.raises(ValueError, match="not .*a.en"):  # sets pooled in another order
        deployed_runs(Work(), "m", dict(reversed(files.items())), str(tmp_path / "pooled.en"))


def broken_results():
    """An undertrained teacher's run (issue 36): every model about 0 BLEU, the student
    fast because its output stops after a few words."""
    entries = results()
    for entry in entries:
        entry["bleu"] = 0.0
        entry["test_sets"] = {}
    entries[0].update(bleu=0.17, length_ratio=1.1, words_per_sentence=12.0,
                      words_per_second=2400.0)
    entries[1].update(length_ratio=0.3, words_per_sentence=3.2, words_per_second=1300.0)
    return entries


def test_no_claim_is_judged_when_the_teacher_looks_broken():
    rows = claims(broken_results(), margin=1.0, copy_bleu=0.48)
    assert {r["verdict"] for r in rows} == {"cannot judge", "not measured"}  # no deploy
    assert {r["goal_met"] for r in rows} == {"cannot judge", "not measured", None}
    reason = rows[0]["cannot_judge_because"]
    assert "BLEU 0.17 is under 5.0" in reason and "not above copying the source (0.48)" in reason
    assert "logs/teacher.log" in reason
    assert by_id(rows)["qd_vs_pm_4bit"]["numbers"]["difference"] == 0.0
    from onmt_qd.recipe.markdown import render

    text = render("t", {"flickr": {"src": "a"}},
                  [{**e, "ppl": 1, "chrf": 0, "path": "p", "bleu_signature": "s",
                    "test_sets": {"flickr": {"bleu": 0.0}}} for e in broken_results()],
                  rows, 1.0, 0.48)
    assert text.splitlines()[2].startswith("**The models look broken, so no claim is judged**")
    assert "cannot judge: the teacher looks broken" in render_claims(rows, 1.0, ["flickr"])[-2]


def test_a_teacher_under_the_floor_or_with_absurd_length_is_broken_alone():
    from onmt_qd.recipe.claims import broken_teacher

    teacher = {"bleu": 30.0, "length_ratio": 1.0}
    assert broken_teacher(teacher, copy_bleu=0.5) is None
    assert "under 5.0" in broken_teacher({**teacher, "bleu": 4.9})
    assert "not above copying the source (31.0)" in broken_teacher(teacher, copy_bleu=31.0)
    assert "3.5 times as long" in broken_teacher({**teacher, "length_ratio": 3.5})
    assert broken_teacher({"bleu": 30.0}) is None  # results of an older onmt_qd


def test_equal_scores_never_meet_a_greater_or_equal_goal():
    entries = results()
    by_name = {e["name"]: e for e in entries}
    by_name["quantized_distillation_4bit"]["bleu"] = by_name["pm_quantization_4bit"]["bleu"]
    row = by_id(claims(entries, margin=1.0))["qd_vs_pm_4bit"]
    assert (row["verdict"], row["goal_met"]) == ("within noise", "within noise")
    by_name["quantized_distillation_4bit"]["bleu"] += 0.01
    assert by_id(claims(entries, margin=1.0))["qd_vs_pm_4bit"]["goal_met"] == "met"


def test_speed_is_judged_in_words_and_only_at_comparable_lengths():
    entries = results()
    teacher, student = entries[0], entries[1]
    teacher.update(length_ratio=1.0, words_per_sentence=12.0, words_per_second=2400.0)
    student.update(length_ratio=0.98, words_per_sentence=11.8, words_per_second=4000.0)
    row = by_id(claims(entries, margin=1.0))["speed"]
    assert row["numbers"]["measure"] == "words_per_second"
    assert (row["numbers"]["ratio"], row["verdict"]) == (1.67, "does not hold")
    student.update(length_ratio=0.3, words_per_sentence=3.5, words_per_second=9000.0)
    row = by_id(claims(entries, margin=1.0))["speed"]
    assert row["verdict"] == "cannot judge" and "0.3 times as long" in \
        row["cannot_judge_because"]
    student.update(length_ratio=0.7, words_per_sentence=8.4)
    row = by_id(claims(entries, margin=1.0))["speed"]
    assert "are not comparable in speed" in row["cannot_judge_because"]


def test_speeds_through_different_engines_are_not_judged():
    """A CTranslate2 teacher (issue 34) is evaluated through CTranslate2, its students'
    checkpoints through OpenNMT-py: their speed ratio compares engines."""
    entries = results()
    teacher, student = entries[0], entries[1]
    teacher.update(length_ratio=1.0, words_per_sentence=12.0, words_per_second=2400.0,
                   engine="CTranslate2")
    student.update(length_ratio=0.98, words_per_sentence=11.8, words_per_second=4000.0,
                   engine="OpenNMT-py")
    row = by_id(claims(entries, margin=1.0))["speed"]
    assert row["verdict"] == "cannot judge"
    assert "compares engines, not models" in row["cannot_judge_because"]
    teacher["engine"] = "OpenNMT-py"
    assert by_id(claims(entries, margin=1.0))["speed"]["verdict"] == "does not hold"

"""The recipe runner: a finished stage is skipped, and runs again when its signature
changed or when a stage it reads from ran again (a retrained student must not keep
its old evaluation)."""
from onmt_qd import recipes


def pipeline_of(work, stages):
    """A Pipeline over hand-made stages (no recipe, no training)."""
    pipeline = recipes.Pipeline.__new__(recipes.Pipeline)
    pipeline.work = str(work)
    for sub in ("stages", "logs"):
        (work / sub).mkdir(exist_ok=True)
    pipeline.stages = stages
    return pipeline


def test_a_stage_reruns_when_a_stage_it_needs_ran_again(tmp_path, capsys):
    ran, signature = [], {"teacher": "epochs=6"}

    def stage(name, needs=()):
        return recipes.Stage(name, lambda: ran.append(name), (),
                             lambda: signature.get(name, ""), needs)

    stages = [stage("teacher"), stage("student"), stage("cache", ["teacher"]),
              stage("distilled", ["cache"]), stage("evaluate", ["student", "distilled"])]
    pipeline = pipeline_of(tmp_path, stages)
    pipeline.run()
    assert ran == ["teacher", "student", "cache", "distilled", "evaluate"]
    ran.clear()
    pipeline.run()
    assert ran == [] and capsys.readouterr().out.count("done already, skipped") == 5
    signature["teacher"] = "epochs=8"
    pipeline.run()
    assert ran == ["teacher", "cache", "distilled", "evaluate"]  # not the student

"""A running stage says where it is on the recipe's console (issue 20): epoch, step and
perplexities of a training stage, counts of the others, only when they changed."""
import sys

from onmt_qd.recipe import progress
from onmt_qd.recipe.runner import Runner, Stage

TRAINING_LOG = """$ python -m onmt_qd.bin.train -config teacher.yaml
[2026-12-02 19:29:38,793 INFO] 450 steps per epoch; training 6 epochs = 2700 steps
[2026-12-02 19:30:38,793 INFO] Step 100/ 2700; acc: 12.0; ppl: 310.5; xent: 5.7; lr: 0.00200; sents:    6400; bsz:   20/  22/64; 4000/4200 tok/s;     60 sec;
[2026-12-02 19:35:38,793 INFO] Validation perplexity: 41.25
[2026-12-02 19:36:38,793 INFO] Step 500/ 2700; acc: 40.0; ppl: 35.25; xent: 3.6; lr: 0.00200; sents:    6400; bsz:   20/  22/64; 4000/4200 tok/s;    420 sec;
"""


def test_training_progress_reads_epoch_step_and_perplexities(tmp_path):
    log = tmp_path / "teacher.log"
    log.write_text(TRAINING_LOG.split("[2026-12-02 19:30")[0])
    assert progress.training(str(log)) == ("epoch 1/6, starting", 0.0)
    log.write_text(TRAINING_LOG)
    line, fraction = progress.training(str(log))
    assert line == "epoch 2/6, step 500/2700, train ppl 35.2, valid ppl 41.2"
    assert abs(fraction - 500 / 2700) < 1e-9
    assert progress.training(str(tmp_path / "missing.log")) is None


def test_counted_progress_takes_the_last_count_of_the_last_line(tmp_path):
    log = tmp_path / "cache.log"
    log.write_text("onmt_qd_teacher_cache: 1,000/29,000 sentences through the teacher, "
                   "33.0 sentences/s, about 14.1 min left\n"
                   "teacher_translations: part 3/10: 8,700/29,000 sentences translated\n")
    assert progress.counted(str(log), "sentences") == ("8,700/29,000 sentences", 0.3)


def test_the_runner_shows_a_running_stages_progress_when_it_changes(tmp_path, capsys):
    """A stage whose command writes a growing log: its progress lines reach the console,
    each once, with the time it has run."""
    runner = Runner(str(tmp_path))
    runner.progress_seconds = 0.2
    log = tmp_path / "counter.log"
    script = ("import time\nfor i in range(1, 5):\n"
              f"    open({str(log)!r}, 'a').write(f'{{i}} / 4 parts\\n'); time.sleep(0.5)\n")
    runner.stages = [Stage("counter", lambda: runner.command("counter", [sys.executable, "-c", script]),
                           progress=lambda: progress.counted(str(log), "parts"))]
    runner.run()
    shown = [line for line in capsys.readouterr().out.splitlines() if "parts (" in line]
    assert shown and len(shown) == len(set(line.split(" (")[0] for line in shown))
    assert all(line.startswith("[1/1] counter: ") and " min" in line for line in shown)
    assert any("/4 parts" in line for line in shown)

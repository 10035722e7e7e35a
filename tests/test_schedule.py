import pytest
from onmt.utils.parse import ArgumentParser

from onmt_qd.opts import parse, train_parser
from onmt_qd.train.schedule import PlateauHalving
from onmt_qd.train.epochs import steps_per_epoch
from test_teacher_cache import run_vocabs, training_batches


def test_halves_from_first_non_improving_epoch_on():
    rule = PlateauHalving()
    scales = []
    for ppl in [10.0, 8.0, 8.5, 7.0, 6.0]:
        rule.observe(ppl)
        scales.append(rule.scale)
    # epoch 3 did not improve: halve there and at every later validation
    assert scales == [1.0, 1.0, 0.5, 0.25, 0.125]


def test_equal_perplexity_counts_as_no_decrease():
    rule = PlateauHalving()
    rule.observe(5.0)
    rule.observe(5.0)
    assert rule.scale == 0.5


def test_start_decay_at_epoch():
    rule = PlateauHalving(start_decay_at_epoch=3)
    for ppl in [10.0, 9.0, 8.0, 7.0]:
        rule.observe(ppl)
    assert rule.scale == 0.25


def test_state_round_trip():
    rule = PlateauHalving(2)
    for ppl in [10.0, 11.0]:
        rule.observe(ppl)
    restored = PlateauHalving(2)
    restored.load_state_dict(rule.state_dict())
    rule.observe(9.0)
    restored.observe(9.0)
    assert restored.state_dict() == rule.state_dict()


@pytest.mark.parametrize("batch_type,batch_size", [("sents", 32), ("tokens", 512)])
def test_an_epoch_is_one_pass_of_openNMT_batches(data, batch_type, batch_size):
    """-epochs counts steps the way OpenNMT-py's batcher fills batches (sentencepiece
    pieces, max of source and target + BOS/EOS for token batches), so an epoch is about
    one pass over the corpus (padding inside a batch adds up to a fifth), not half of one."""
    opt = parse(train_parser(), ["-config", data["config"], "-batch_type", batch_type,
                                 "-batch_size", str(batch_size)])
    ArgumentParser.validate_prepare_opts(opt)
    vocabs = run_vocabs(opt)
    seen = batches = 0
    for batch in training_batches(opt, vocabs, 10_000):
        seen, batches = seen + len(batch["srclen"]), batches + 1
        if seen >= 600:  # the fixture corpus once
            break
    steps = steps_per_epoch(opt)
    assert steps <= batches <= 1.25 * steps + 1, (steps, batches)


@pytest.mark.parametrize("report_every,expected", [(50, 1), (1, 1)])
def test_an_epoch_shorter_than_ten_reports_reports_more_often(data, report_every, expected):
    """Issue 36: an epoch of 32 steps logged no step at OpenNMT-py's every 50, and the
    recipe's progress stayed at "starting" for minutes. The fixture's epoch is 19 steps
    of 32 sentences: at least ten reports an epoch means every step."""
    from onmt_qd.train.epochs import apply_epochs

    opt = parse(train_parser(), ["-config", data["config"], "-epochs", "2",
                                 "-report_every", str(report_every)])
    apply_epochs(opt)
    assert opt.valid_steps == 19 and opt.report_every == expected


@pytest.mark.parametrize("args,given,workers,bucket", [
    ([], set(), 0, 600),                                     # OpenNMT-py's 2 and 262144
    (["-num_workers", "2"], {"num_workers"}, 2, 300),        # the user's workers: a share each
    (["-bucket_size", "100"], {"bucket_size"}, 0, 100),      # a bucket within the corpus
    (["-bucket_size", "1000"], {"bucket_size"}, 0, 1000),    # the user's, warned of
    (["-world_size", "2", "-gpu_backend", "gloo"], set(), 0, 300),
])
def test_loading_is_chosen_from_the_corpus_unless_the_user_chose(data, args, given, workers,
                                                                 bucket):
    """Issue 36: with OpenNMT-py's defaults two loader workers each filled a 262,144-
    example bucket from a 4,000-line corpus (65 passes) before the first step. A small
    corpus is read in the training process, and no bucket exceeds a reader's share."""
    import yaml

    from onmt_qd.train.loading import choose_loading

    config = yaml.safe_load(open(data["config"]))
    del config["num_workers"], config["bucket_size"]
    path = data["root"] / "defaults.yaml"
    path.write_text(yaml.safe_dump(config))
    opt = parse(train_parser(), ["-config", str(path), *args])
    choose_loading(opt, given)
    assert (opt.num_workers, opt.bucket_size) == (workers, bucket)


def test_the_options_a_user_gave_are_known_from_the_line_and_the_config(data):
    from onmt_qd.opts import given_options

    parser = train_parser()
    assert given_options(parser, ["-config", data["config"], "-bucket_size", "9"]) >= {
        "config", "bucket_size", "num_workers", "batch_size"}
    assert "num_workers" not in given_options(parser, ["-train_steps", "1"])

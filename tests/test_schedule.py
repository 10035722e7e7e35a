from onmt_qd.train.schedule import PlateauHalving


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

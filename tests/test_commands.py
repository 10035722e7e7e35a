"""Every command declares its options in onmt_qd/opts/ and parses them strictly, and a
rule shared by several commands reads the same wherever it is broken (issue 20). Each
refusal here comes before any model or data is read: no training, a few seconds."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from test_bad_input import refused
from test_recipe_configs import edited_recipe

with open(os.path.join(REPO, "setup.py")) as handle:
    COMMANDS = dict(re.findall(r'"onmt_qd_(\w+)=onmt_qd_cli:(\w+)"', handle.read()))

# command -> (its arguments before a mistyped option, the typo, the option to suggest)
TYPOS = {
    "train": ([], "-hiden_size", "-hidden_size"),
    "quantize": (["-model", "m.pt"], "-bucket_sise", "-bucket_size"),
    "diffquant": (["-model", "m.pt"], "-avg_bist", "-avg_bits"),
    "compress": (["-model", "m.pt"], "-report_jsn", "-report_json"),
    "translate": (["-model", "m.pt"], "-beam_sise", "-beam_size"),
    "eval": (["-model", "m.pt"], "-beam_sise", "-beam_size"),
    "recipe": (["multi30k"], "-work_dri", "-work_dir"),
    "data": (["get", "multi30k", "-dest", "d"], "-form", "-from"),
    "teacher_cache": ([], "-tpok", "-topk"),
    "export": (["-model", "m.pt"], "-quantizaton", "-quantization"),
    "teacher_translate": (["-model", "m.pt"], "-chunk_line", "-chunk_lines"),
}


def test_every_console_command_is_covered():
    assert sorted(COMMANDS) == sorted(TYPOS)


@pytest.mark.parametrize("name", sorted(TYPOS))
def test_an_unknown_option_is_one_line_with_a_suggestion(name, tmp_path, monkeypatch):
    """Each console command of setup.py, through its main() as installed; a new command
    fails test_every_console_command_is_covered until it has a line in TYPOS."""
    monkeypatch.chdir(tmp_path)
    before, typo, suggestion = TYPOS[name]
    expected = f"onmt_qd_{name}: error: unknown option '{typo}' (did you mean '{suggestion}'?)"
    assert refused(COMMANDS[name], *before, typo, "2", message=expected) == expected
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", sorted(TYPOS))
def test_an_unknown_config_key_is_one_line_with_a_suggestion(name, tmp_path, monkeypatch):
    """Every command takes -config FILE.yaml (OpenNMT-py's), checked as strictly as its
    command line; onmt_qd_data's belongs to its subcommand."""
    monkeypatch.chdir(tmp_path)
    before, typo, suggestion = TYPOS[name]
    config = tmp_path / "config.yaml"
    config.write_text(f"{typo.lstrip('-')}: 1\n")
    subcommand = before[:2] if name == "data" else []
    expected = (f"onmt_qd_{name}: error: unknown key '{typo.lstrip('-')}' in config {config} "
                f"(did you mean '{suggestion.lstrip('-')}'?)")
    assert refused(COMMANDS[name], *subcommand, "-config", config, message=expected) == expected
    assert os.listdir(tmp_path) == ["config.yaml"]


# command -> (arguments before -config, the config, the refusal that shows it was read)
CONFIGS = {
    "eval": ([], {"model": "m.pt", "src": ["a.de"], "tgt": ["a.en"], "beam_size": 0},
             "-beam_size must be at least 1, got 0"),
    "compress": ([], {"model": "none.pt", "report_only": True}, "-model none.pt does not exist"),
    "quantize": ([], {"model": "m.pt", "bits": 9, "output": "q.pt"},
                 "-bits must be an integer from 1 to 8, got 9"),
    "export": ([], {"model": "none.pt", "output": "out"}, "-model none.pt does not exist"),
    "recipe": (["multi30k"], {"profile": "nosuch"}, "recipe multi30k has no profile 'nosuch'"),
    "data": (["get", "multi30k"], {"dest": "d", "from": "none"},
             "mirror none for dataset multi30k does not exist"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_command_once_without_config_reads_one(name, tmp_path, monkeypatch):
    """The commands that parsed with plain argparse read their options, required ones
    and switches included, from -config too; the command line still wins."""
    monkeypatch.chdir(tmp_path)
    before, options, message = CONFIGS[name]
    with open(tmp_path / "config.yaml", "w") as handle:
        yaml.safe_dump(options, handle)
    refused(COMMANDS[name], *before, "-config", "config.yaml", message=message)
    if name == "eval":
        refused(COMMANDS[name], "-config", "config.yaml", "-beam_size", 2, "-batch_size", 0,
                message="-batch_size must be at least 1, got 0")
    assert os.listdir(tmp_path) == ["config.yaml"]


def test_options_from_values_are_those_the_command_line_gives():
    """opts.options_of, for a caller in Python (inference/evaluate.py): the parser's
    defaults with the given values over them, exactly what parsing gives."""
    from onmt_qd.opts import options_of, parse, translate_parser

    given = options_of(translate_parser(), models=["m.pt"], src="s.txt", beam_size=3,
                       precision="int8")
    parsed = parse(translate_parser(), ["-model", "m.pt", "-src", "s.txt", "-beam_size", "3",
                                        "-precision", "int8"])
    assert vars(given) == vars(parsed)
    with pytest.raises(TypeError, match="no option with dest model"):
        options_of(translate_parser(), model="m.pt")


def test_a_profile_width_breaks_the_rule_of_the_commands_by_name(tmp_path, monkeypatch):
    """A profile's width is refused at load with the range onmt_qd_quantize and
    onmt_qd_diffquant state for -bits, naming the profile key instead of the option."""
    rule = "must be an integer from 1 to 8, got 9"
    refused("quantize", "-model", tmp_path / "m.pt", "-bits", 9, "-output", tmp_path / "q.pt",
            message=f"-bits {rule}")
    edited_recipe(tmp_path, monkeypatch, lambda r: r["profiles"]["quick"].update(qd_bits=[9]))
    line = refused("recipe", "multi30k", "-work_dir", tmp_path / "work",
                   message="qd_bits in profile quick of ")
    assert line.endswith(rule)
    assert not (tmp_path / "work").exists()


def test_diffquant_refuses_a_compressed_output_name_as_quantize_does(tmp_path):
    teacher = tmp_path / "t.pt"
    teacher.write_bytes(b"not read before the output is checked")
    stand_ins = ["-data", "{}", "-src_vocab", teacher]
    for module, args in (("quantize", []),
                         ("diffquant", [*stand_ins, "-teacher_model", teacher])):
        refused(module, "-model", teacher, "-bits", 2, *args, "-output", tmp_path / "m.qdz",
                message=f"-output {tmp_path / 'm.qdz'}: onmt_qd_{module} writes an OpenNMT-py "
                "checkpoint (.pt), not a compressed .qdz")
        refused(module, "-model", teacher, "-bits", 2, *args, "-output", "-",
                message="a model cannot go to standard output")
    assert os.listdir(tmp_path) == ["t.pt"]


def test_the_teacher_file_rule_is_the_same_for_every_command(tmp_path):
    """onmt_qd_teacher_cache now refuses a missing or compressed teacher as
    onmt_qd_train and onmt_qd_diffquant do, before reading any data."""
    packed = tmp_path / "t.qdz"
    packed.write_bytes(b"ONMTQDZ\0" + b"\0" * 64)
    stand_ins = ["-data", "{}", "-src_vocab", packed]
    for bad, message in ((tmp_path / "none.pt", f"teacher checkpoint {tmp_path / 'none.pt'} "
                          "does not exist: train the teacher first or fix -teacher_model"),
                         (packed, "is an onmt_qd compressed model (.qdz)")):
        refused("teacher_cache", *stand_ins, "-teacher_model", bad, "-output", tmp_path / "c",
                message=message)
        refused("diffquant", *stand_ins, "-model", packed, "-teacher_model", bad, "-bits", 2,
                "-output", tmp_path / "d.pt", message=message)
    assert sorted(os.listdir(tmp_path)) == ["t.qdz"]


def test_diffquant_refuses_an_average_width_before_reading_any_model(tmp_path):
    """-avg_bits breaks the rule of allocate_bits's budget (quant.check_avg_bits) when it
    is parsed, not after the model is loaded and its gradients probed."""
    model = tmp_path / "m.pt"
    model.write_bytes(b"not read before the options are checked")
    stand_ins = ["-data", "{}", "-src_vocab", model, "-teacher_model", model, "-bits", 2]
    for avg, rule in ((0.5, "-avg_bits 0.5 is less than the 1-bit minimum"),
                      (0, "-avg_bits 0.0 is less than"),  # once: -bits, silently
                      ("nan", "-avg_bits nan is less than"),
                      (9, "-avg_bits 9.0 is more than the 8-bit maximum")):
        refused("diffquant", "-model", model, *stand_ins, "-avg_bits", avg,
                "-output", tmp_path / "d.pt", message=rule)
    assert os.listdir(tmp_path) == ["m.pt"]


def test_a_command_starts_without_spacy_and_a_terminology_transform_still_gets_it():
    """OpenNMT-py imports spaCy for its terminology transform only: a command does not
    pay for it at every start (about 1.3 s of CPU), and the transform still loads it."""
    script = ("import inspect, sys, onmt_qd.bin, onmt_qd.opts, onmt.transforms.terminology as t\n"
              "inspect.getmodule(sys._getframe(), 'x.py')  # as torch registering an operator\n"
              "print('thinc' in sys.modules, t.spacy.load.__module__)")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", script], cwd=REPO,
                            capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "spacy"]


def test_importing_the_pure_parts_leaves_the_process_as_it_was():
    """Importing onmt_qd, quant or codec installs no stand-in spacy, no warning filter
    and no torch safe global: commands and the OpenNMT-py adapter do that
    (compat.prepare_onmt), and a library user's process stays their own."""
    script = ("import sys, warnings, torch\n"
              "filters, safe = list(warnings.filters), torch.serialization.get_safe_globals()\n"
              "import onmt_qd, onmt_qd.quant, onmt_qd.codec\n"
              "print('spacy' in sys.modules, warnings.filters == filters,\n"
              "      set(torch.serialization.get_safe_globals()) == set(safe))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert result.stdout.split() == ["False", "True", "True"]

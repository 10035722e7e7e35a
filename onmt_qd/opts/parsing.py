"""The strict parse every command goes through: unknown options and unknown -config
keys are one-line errors with a suggestion (onmt_train passes a typo silently, and
argparse would print its whole usage); and options_of, a parser's options from values
for a caller in Python. Built on argparse's internals (its actions), as OpenNMT-py's
configargparse parsers are argparse parsers."""
import argparse
import difflib
import sys

import yaml

from onmt_qd.opts.devices import check_devices
from onmt_qd.opts.errors import OptionError


def _known_keys(*parsers: argparse.ArgumentParser) -> set:
    """Every name an option of ``parsers`` goes by: its dest and its option strings."""
    keys = set()
    for parser in parsers:
        for action in parser._actions:
            keys.add(action.dest)
            keys.update(s.lstrip("-") for s in action.option_strings)
    return keys


def did_you_mean(word: str, known, prefix: str = "") -> str:
    """" (did you mean 'PREFIXx'?)" for the closest known word x, or ""."""
    close = difflib.get_close_matches(word, sorted(known), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def check_keys(parser: argparse.ArgumentParser, keys, where: str) -> None:
    """Raise OptionError for the first key that names no option of ``parser``."""
    _refuse_unknown(keys, _known_keys(parser), where)


def _refuse_unknown(keys, known: set, where: str) -> None:
    for key in keys:
        if key not in known:
            raise OptionError(f"unknown key '{key}' in {where}{did_you_mean(key, known)}")


def read_config(path: str) -> dict:
    """The options a -config file sets, or an OptionError saying why it is no such file."""
    try:
        with open(path) as handle:
            config = yaml.safe_load(handle) or {}
    except OSError as exc:
        raise OptionError(f"cannot read config {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise OptionError(f"config {path} is not a YAML text file (byte {exc.start} is "
                          "not UTF-8): -config takes the options file, not a model or "
                          "data") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise OptionError(f"config {path} is not valid YAML{where}: "
                          f"{getattr(exc, 'problem', None) or exc}") from exc
    if not isinstance(config, dict):
        raise OptionError(f"config {path} is not a YAML mapping of option: value")
    return config


def check_config_keys(parsers: list, args: list) -> None:
    """Raise OptionError for a YAML key that names no option of ``parsers`` (a command's
    and its subcommand's; onmt_train ignores such keys, so a typo silently trains
    something else)."""
    known = _known_keys(*parsers)
    for i, arg in enumerate(args):
        if arg.lstrip("-") == "config" and i + 1 < len(args):
            _refuse_unknown(read_config(args[i + 1]), known, f"config {args[i + 1]}")


def given_options(parser: argparse.ArgumentParser, args: list) -> set:
    """The options ``args`` set, on the command line or in a -config file (dest names):
    a default the user did not choose may be chosen for them (train/loading.py)."""
    given = set()
    strings = {}
    for action in parser._actions:
        for string in action.option_strings:
            strings[string] = action.dest
    for i, arg in enumerate(args):
        dest = strings.get(arg.split("=", 1)[0])
        if dest is None:
            continue
        given.add(dest)
        if dest == "config" and i + 1 < len(args):
            given.update(str(key) for key in read_config(args[i + 1]))
    return given


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _unknown_option_error(options, option):
    if not option.startswith("-"):
        return OptionError(f"unexpected argument '{option}'")
    known = [s.lstrip("-") for s in options]
    hint = did_you_mean(option.lstrip("-"), known, prefix="-")
    return OptionError(f"unknown option '{option}'{hint}")


def _raise_option_error(message):
    raise OptionError(message)


def _parsers(parser, args):
    """``parser`` and, when it has subcommands (onmt_qd_data get|spm), the one ``args``
    name: the parsers whose options ``args`` may use."""
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers += [action.choices[arg] for arg in args[:1] if arg in action.choices]
    return parsers


def parse(parser: argparse.ArgumentParser, args=None) -> argparse.Namespace:
    """Parse strictly: unknown command-line options and YAML keys are errors
    (checked before argparse, which would read '-hiden_size' as '-h iden_size').
    ``parser``: a command's (declarations.command_parser: OpenNMT-py's configargparse
    parser, with -config)."""
    args = sys.argv[1:] if args is None else list(args)
    parsers = _parsers(parser, [arg for arg in args if not arg.startswith("-")])
    options = {}
    for each in parsers:
        each.error = _raise_option_error  # one line, not the whole usage
        options.update(each._option_string_actions)
    if "-config" in options:
        check_config_keys(parsers, args)
    for arg in args:
        option = arg.split("=", 1)[0]
        if arg.startswith("-") and arg != "-" and not _is_number(arg) \
                and option not in options:  # "-": standard input
            raise _unknown_option_error(options, option)
    opt, unknown = parser.parse_known_args(args)
    if unknown:
        raise _unknown_option_error(options, unknown[0])
    gpu = getattr(opt, "gpu", -1)
    if not isinstance(gpu, bool):  # onmt_qd_recipe -gpu is a switch, not a device
        check_devices([gpu], "-gpu")
    check_devices(getattr(opt, "gpu_ranks", None) or [], "-gpu_ranks")
    return opt


def options_of(parser: argparse.ArgumentParser, **given) -> argparse.Namespace:
    """The options ``parser`` gives when only ``given`` (dest: value, as parsed) is set:
    for a caller in Python, which has values, not a command line to make up. A string
    default is converted by the option's type, as argparse does."""
    actions = {action.dest: action for action in parser._actions
               if action.dest != argparse.SUPPRESS and action.default != argparse.SUPPRESS}
    unknown = set(given) - set(actions)
    if unknown:
        raise TypeError(f"{parser.prog} has no option with dest {sorted(unknown)[0]}")
    opt = argparse.Namespace()
    for dest, action in actions.items():
        default = action.default
        if isinstance(default, str):
            default = parser._get_value(action, default)
        setattr(opt, dest, given.get(dest, default))
    return opt

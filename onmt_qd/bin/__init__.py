"""The commands. Every command starts by importing this package (onmt_qd_cli.py does,
and so does ``python -m onmt_qd.bin.NAME``, in the processes such a run spawns too),
before its module imports OpenNMT-py: the process is set up for OpenNMT-py here."""
from onmt_qd.compat import prepare_onmt

prepare_onmt()

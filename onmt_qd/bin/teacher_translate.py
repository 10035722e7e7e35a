"""onmt_qd_teacher_translate -model TEACHER -src TRAIN.SRC -output TRAIN.TEACHER: the
teacher's translation of a training source, resumable (onmt_qd/inference/chunked.py)."""
from onmt_qd.bin.common import run_command
from onmt_qd.opts import parse, teacher_translate_parser


def main():
    def run():
        from onmt_qd.inference.chunked import translate_in_chunks

        translate_in_chunks(parse(teacher_translate_parser()))

    run_command(run, "onmt_qd_teacher_translate")


if __name__ == "__main__":
    main()

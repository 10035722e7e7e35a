"""onmt_qd_teacher_cache -config DATA.yaml -teacher_model T.pt [-topk K] -output CACHE:
the teacher's top-K distribution per target position of the training corpora, for
onmt_qd_train -teacher_cache CACHE. onmt_qd_teacher_cache -verify CACHE checks it whole."""
import sys

from onmt_qd.bin.common import run_command
from onmt_qd.opts import OptionError, parse, teacher_cache_parser, teacher_cache_verify_parser

VERIFY = ("-verify", "--verify")


def main():
    def run():
        from onmt.utils.logging import init_logger

        from onmt_qd.distill.cache_build import build_teacher_cache, verify_teacher_cache

        options = [arg.split("=", 1)[0] for arg in sys.argv[1:] if arg.startswith("-")]
        if any(option in VERIFY for option in options):
            others = [option for option in options if option not in VERIFY]
            if others:
                raise OptionError(f"-verify checks an existing cache and takes no other "
                                  f"option, got {others[0]}")
            init_logger()
            verify_teacher_cache(parse(teacher_cache_verify_parser()).verify)
            return
        opt = parse(teacher_cache_parser())
        init_logger(opt.log_file)
        build_teacher_cache(opt)

    run_command(run, "onmt_qd_teacher_cache")


if __name__ == "__main__":
    main()

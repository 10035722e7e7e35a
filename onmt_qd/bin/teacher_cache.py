"""onmt_qd_teacher_cache -config DATA.yaml -teacher_model T.pt [-topk K] -output CACHE:
the teacher's top-K distribution per target position of the training corpora, for
onmt_qd_train -teacher_cache CACHE."""
from onmt_qd.bin.common import run_command
from onmt_qd.opts import parse, teacher_cache_parser


def main():
    def run():
        from onmt.utils.logging import init_logger

        from onmt_qd.distill.cache_build import build_teacher_cache

        opt = parse(teacher_cache_parser())
        init_logger(opt.log_file)
        build_teacher_cache(opt)

    run_command(run, "onmt_qd_teacher_cache")


if __name__ == "__main__":
    main()

"""onmt_qd_recipe NAME [-profile quick|gpu|paper|mini] [-data_dir D] [-work_dir W]
[-stages S ...] [-jobs N]: run a recipe's stages; finished stages are skipped, unless
their settings changed. One run at a time per work folder; its commands stop with it."""
import argparse

from onmt_qd.bin.common import run_command


def parser():
    p = argparse.ArgumentParser(prog="onmt_qd_recipe", description=__doc__)
    p.add_argument("name", help="multi30k, integ200k or wmt13")
    p.add_argument("-profile", default="quick",
                   help="quick (2 CPU cores, under 30 minutes), gpu (the paper's sizes, "
                   "fast settings, one GPU), paper (the paper's settings, GPU), mini (tests)")
    p.add_argument("-data_dir", default=None, help="where the dataset is (fetched if absent)")
    p.add_argument("-work_dir", default=None, help="default: runs/NAME_PROFILE")
    p.add_argument("-from", dest="mirror", default=None, help="local dataset mirror")
    p.add_argument("-stages", nargs="*", default=None, help="run only these stages")
    p.add_argument("-gpu", action="store_true", help="train and evaluate on GPU 0")
    p.add_argument("-jobs", type=int, default=None,
                   help="stages run side by side, up to this many (default: the profile's "
                   "jobs, else 1); evaluation and compression run their models so too")
    return p


def main():
    def run():
        import os

        from onmt_qd.recipe import Pipeline
        from onmt_qd.recipe.runner import exit_on_signals

        args = parser().parse_args()
        work = args.work_dir or os.path.join("runs", f"{args.name}_{args.profile}")
        pipeline = Pipeline(args.name, args.profile, work, args.data_dir, args.mirror, args.gpu,
                            args.jobs)
        with exit_on_signals("onmt_qd_recipe"):
            pipeline.run(args.stages)
        if os.path.exists(pipeline.path("report.md")):
            print(f"Report: {pipeline.path('report.md')}\nPlot:   "
                  f"{pipeline.path('bleu_vs_size.png')}\nJSON:   {pipeline.path('results.json')}")

    run_command(run, "onmt_qd_recipe")


if __name__ == "__main__":
    main()

"""onmt_qd_recipe: run a recipe's stages (options: opts.recipe_parser)."""
from onmt_qd.bin.common import run_command


def main():
    def run():  # everything imported in here: Ctrl-C while importing is one line too
        import os

        from onmt_qd.opts import parse, recipe_parser
        from onmt_qd.recipe import Pipeline
        from onmt_qd.recipe.runner import exit_on_signals

        args = parse(recipe_parser())
        recipe = os.path.splitext(os.path.basename(args.name))[0]  # a name or a file
        work = args.work_dir or os.path.join("runs", f"{recipe}_{args.profile}")
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

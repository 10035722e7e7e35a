"""onmt_qd_compress: pack a quantized checkpoint (options: opts.compress_parser)."""
import json
import os
import tempfile

from onmt_qd.bin.common import run_command
from onmt_qd.opts import compress_parser, parse


def main():
    def run():
        from onmt_qd.codec import format_size_report
        from onmt_qd.fileio import check_input_file, check_not_stdout, check_outputs, open_output
        from onmt_qd.qdz import compress_checkpoint, load_any

        args = parse(compress_parser())
        if not args.output and not args.report_only:
            raise ValueError("give -output OUT.qdz (or -report_only)")
        check_input_file(args.model, "-model")
        output = None if args.report_only else args.output
        check_not_stdout("-output", output, "a compressed model")
        check_outputs({"-output": output, "-report_json": args.report_json},
                      {"-model": args.model})
        checkpoint = load_any(args.model)
        with tempfile.TemporaryDirectory() as tmp:
            output = output or os.path.join(tmp, "model.qdz")
            report = compress_checkpoint(checkpoint, output, args.coder, args.pooling, args.model)
        print(format_size_report(report))
        if args.report_json:
            with open_output(args.report_json) as handle:
                json.dump(report.to_dict(), handle, indent=1)
        if not args.report_only:
            print(f"wrote {args.output}: {report.bytes_on_disk:,} bytes")

    run_command(run, "onmt_qd_compress")


if __name__ == "__main__":
    main()

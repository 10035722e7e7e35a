"""onmt_qd_compress -model IN.pt -output OUT.qdz [-coder huffman|ans]: pack a quantized
checkpoint into one compressed file and print where its bytes go.
-report_only prints the report without keeping a file."""
import argparse
import json
import os
import tempfile

from onmt_qd.bin.common import run_command
from onmt_qd.codec.entropy import CODERS
from onmt_qd.codec.levelcoding import POOLINGS


def parser():
    p = argparse.ArgumentParser(prog="onmt_qd_compress", description=__doc__)
    p.add_argument("-model", required=True, help="quantized checkpoint (onmt_qd_train "
                   "-quant_bits, onmt_qd_quantize or onmt_qd_diffquant), or a compressed "
                   "file to pack again (e.g. with another -coder)")
    p.add_argument("-output", default=None, help="compressed file to write")
    p.add_argument("-coder", choices=CODERS, default="huffman")
    p.add_argument("-pooling", choices=POOLINGS, default="auto",
                   help="one code table per tensor, one for all, or whichever is smaller")
    p.add_argument("-report_only", action="store_true")
    p.add_argument("-report_json", default=None, help="also write the report as JSON")
    return p


def summary(report):
    """Weighted means over the quantized weights, for tables and plots."""
    rows = report["quantized"]
    n = sum(r["n_params"] for r in rows)
    return {"quantized_params": n,
            "mean_code_bits": sum(r["mean_code_bits"] * r["n_params"] for r in rows) / n,
            "entropy_bits": sum(r["entropy_bits"] * r["n_params"] for r in rows) / n,
            "fixed_width_bits": sum(r["bits"] * r["n_params"] for r in rows) / n}


def main():
    def run():
        from onmt_qd.codec import format_size_report
        from onmt_qd.fileio import check_input_file, check_not_stdout, check_outputs, open_output
        from onmt_qd.qdz import compress_checkpoint, load_any

        args = parser().parse_args()
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
            data = report.to_dict()
            data.update(summary(data))
            with open_output(args.report_json) as handle:
                json.dump(data, handle, indent=1)
        if not args.report_only:
            print(f"wrote {args.output}: {report.bytes_on_disk:,} bytes")

    run_command(run, "onmt_qd_compress")


if __name__ == "__main__":
    main()

"""onmt_qd_export -model M.pt|M.qdz -output DIR [-quantization int8]: a CTranslate2
model directory for a Transformer (onmt_qd/deploy/ct2.py), which onmt_qd_translate and
onmt_qd_eval take as -model."""
from onmt_qd.bin.common import run_command
from onmt_qd.opts import export_parser, parse


def main():
    def run():
        from onmt_qd.deploy.ct2 import directory_size, export

        opt = parse(export_parser())
        manifest = export(opt.model, opt.output, opt.quantization)
        print(f"wrote {opt.output}: CTranslate2 {manifest['ctranslate2_version']}, "
              f"{manifest['quantization']}, {directory_size(opt.output)} bytes")

    run_command(run, "onmt_qd_export")


if __name__ == "__main__":
    main()

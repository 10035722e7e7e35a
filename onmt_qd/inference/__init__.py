"""Translation and evaluation as a library: load a model once, translate lines with
it (engine.py), evaluate it on a test set (evaluate.py); bin/translate.py and
bin/eval.py only parse, call and print."""

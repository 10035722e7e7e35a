"""Values that several floors name (as OpenNMT-py's onmt.constants): kept at the bottom
so that the option declarations (opts/declarations.py) need not import the modules that
act on them."""

DEFAULT_TOPK = 8  # tokens per position a teacher cache keeps unless told otherwise
# CTranslate2's weight types that onmt_qd_export writes (deploy/ct2.py)
CT2_QUANTIZATIONS = ("int8", "int8_float32", "int16", "float16", "float32")
# sentences per chunk of onmt_qd_teacher_translate: a kill loses at most this much work
TEACHER_CHUNK_LINES = 1000
# the teacher cache's format (distill/cache.py); the recipe's cache stage names it in its
# signature without importing the cache's OpenNMT-py side
TEACHER_CACHE_VERSION = 2  # 2: per-block checksums

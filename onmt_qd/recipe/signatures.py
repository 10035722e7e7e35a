"""What stage signatures are made of: a digest of the settings a stage's output depends
on, and digests of the files a recipe gives (its teacher, tokenizers, mono text)."""
import hashlib
import json

from onmt_qd.fileio import sha256


def settings_digest(settings: dict) -> str:
    """A short, stable name for the settings a stage's output depends on: a finished
    stage whose settings changed (a profile edited, another profile in the same work
    folder) runs again instead of being skipped."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return "settings=" + hashlib.sha256(text.encode()).hexdigest()[:12]


def given_digest(recipe: dict) -> str:
    """The SHA-256 of the recipe's given teacher_model and, for a CTranslate2 teacher,
    of the tokenizers found or named for it."""
    translator = recipe.get("teacher_translator")
    tokenizers = f" tokenizers={sha256(translator.source_spm)[:16]}," \
        f"{sha256(translator.target_spm)[:16]}" if translator else ""
    if translator:  # its weights, conventions (config.json) and vocabularies
        from onmt_qd.ct2_format import directory_digest

        return f"sha256={directory_digest(recipe['teacher_model'])}{tokenizers}"
    return f"sha256={sha256(recipe['teacher_model'])}"

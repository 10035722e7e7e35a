"""bleu_vs_size.png: BLEU against what a user ships, one marker per method."""
from onmt_qd.fileio import atomic_output
from onmt_qd.recipe.claims import fp32_bytes
from onmt_qd.recipe.identity import METHODS, TEACHER, ModelId


def shipped_bytes(entry):
    """What a user ships: the compressed file of a quantized model, the fp32 weights of a
    full-precision one (its checkpoint also holds optimizer state: 3x the weights with
    Adam)."""
    return fp32_bytes(entry) if entry["bits"] == 32 else entry["size_bytes"]


def plot(entries, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = dict(zip(METHODS, "*osDv^<"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for e in entries:
        ax.scatter(shipped_bytes(e) / 1e6, e["bleu"], marker=markers.get(e["method"], "x"),
                   s=160 if ModelId.of(e) == TEACHER else 60, label=ModelId.of(e).label)
    ax.set_xscale("log")
    ax.set_xlabel("MB, log scale: .qdz file on disk; fp32 weights for full precision")
    ax.set_ylabel("BLEU")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_output(path) as temporary:
        fig.savefig(temporary, dpi=120, format="png")

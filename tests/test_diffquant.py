"""Differentiable quantization (Algorithm 2) on a real tiny model."""
import torch

from conftest import run_cli
from onmt_qd.compat import load_checkpoint
from onmt_qd.evaluate.metrics import reference_perplexity
from onmt_qd.models import build_model_from_checkpoint
from onmt_qd.quant import QuantizedTensor, point_gradient, quantize_to_points
from onmt_qd.quant_checkpoint import quantization_of


def test_point_gradient_matches_finite_differences_of_the_loss():
    torch.manual_seed(0)
    w = torch.randn(3, 50, dtype=torch.float64)
    x = torch.randn(50, 4, dtype=torch.float64)
    points = torch.tensor([0.0, 0.3, 0.55, 1.0], dtype=torch.float64)

    def loss_at(p, levels=None):
        qt = quantize_to_points(w, p, bucket_size=32) if levels is None else levels
        if levels is not None:
            qt = QuantizedTensor(levels.levels, levels.alpha, levels.beta, p, levels.shape,
                                 levels.bucket_size, levels.bits)
        q = qt.dequantize().double()
        return ((q @ x).sin()).sum(), qt

    _, qt = loss_at(points)
    q = qt.dequantize().double().requires_grad_(True)
    ((q @ x).sin()).sum().backward()
    analytic = point_gradient(qt, q.grad)
    eps = 1e-6
    for j in range(len(points)):
        up, down = points.clone(), points.clone()
        up[j] += eps
        down[j] -= eps
        numeric = (loss_at(up, qt)[0] - loss_at(down, qt)[0]) / (2 * eps)
        assert abs(numeric.item() - analytic[j].item()) < 1e-4 * max(1, abs(numeric.item()))


def test_diffquant_beats_pm_quantization_at_2_bits(data, teacher, tmp_path):
    """Uniform initial points without redistribution are exactly PM quantization; a few
    steps of learning the points must lower validation perplexity below it. At rate
    0.003 the gain was 0.09% (63.943 -> 63.886), a margin a CPU's rounding should not
    decide but close; at 0.03 both validations improve (63.85, then 63.62)."""
    out = tmp_path / "dq.pt"
    result = run_cli("diffquant", "-config", data["config"], "-model", teacher,
                     "-teacher_model", teacher, "-bits", 2, "-bucket_size", 64,
                     "-init", "uniform", "-redistribute", "none", "-train_steps", 60,
                     "-valid_steps", 30, "-learning_rate", 0.03, "-output", out)
    log = result.stderr
    initial = float(log.split("initial points: validation perplexity ")[1].split()[0])
    checkpoint = load_checkpoint(str(out))
    assert checkpoint["qd_valid"]["ppl"] < initial
    # what was validated is what was saved (the generator once aliased the checkpoint
    # and got quantized twice)
    model, vocabs, model_opt = build_model_from_checkpoint(checkpoint)
    ppl = reference_perplexity(model, vocabs, model_opt, data["valid.de"], data["valid.en"])
    assert abs(ppl - checkpoint["qd_valid"]["ppl"]) / ppl < 1e-4
    policy, tensors = quantization_of(checkpoint)
    for qt in tensors.values():
        assert qt.points.numel() <= 4
        assert torch.all(qt.points[1:] >= qt.points[:-1])
        assert qt.points.min() >= 0 and qt.points.max() <= 1


def test_redistribution_gives_more_bits_where_gradients_are_larger(data, teacher, tmp_path):
    out = tmp_path / "dq.pt"
    run_cli("diffquant", "-config", data["config"], "-model", teacher, "-teacher_model",
            teacher, "-bits", 2, "-redistribute", "points", "-grad_norm_batches", 3,
            "-train_steps", 2, "-valid_steps", 2, "-output", out)
    info = load_checkpoint(str(out))["qd_diffquant"]
    alloc, norms = info["allocation"], info["grad_norms"]
    assert sum(points for points, _ in alloc.values()) == 4 * len(alloc)  # conserved
    by_norm = sorted(alloc, key=lambda n: norms[n])
    assert alloc[by_norm[-1]][0] > alloc[by_norm[0]][0]
    _, tensors = quantization_of(load_checkpoint(str(out)))
    for name, qt in tensors.items():
        assert qt.points.numel() <= alloc[name][0]


def test_diffquant_bad_input(data, teacher, tmp_path):
    common = ["-config", data["config"], "-model", teacher, "-output", tmp_path / "x.pt"]
    cases = [
        (["-teacher_model", teacher, "-bits", 2, "-include", "no_such_tensor"], "matches no parameter"),
        (["-teacher_model", teacher, "-bits", 2, "-avg_bits", 0.5], "less than the 1-bit minimum"),
        (["-teacher_model", teacher, "-bits", 2, "-avg_bits", 9], "more than the 8-bit maximum"),
        (["-bits", 2], "-teacher_model is required"),
    ]
    for args, message in cases:
        result = run_cli("diffquant", *common, *args, check=False)
        assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], \
            result.stderr[-500:]
        assert not (tmp_path / "x.pt").exists()


def test_assignments_follow_the_points():
    torch.manual_seed(0)
    w = torch.randn(4, 64)
    before = quantize_to_points(w, torch.tensor([0.0, 0.3, 0.7, 1.0]), bucket_size=64)
    after = quantize_to_points(w, torch.tensor([0.0, 0.45, 0.55, 1.0]), bucket_size=64)
    assert not torch.equal(before.levels, after.levels)
    assert after.levels.max() <= 3

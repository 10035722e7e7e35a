import torch
import torch.nn.functional as F

from onmt_qd.distill import distillation_loss

PAD = 1


def logits_and_target(seed=0, n=12, vocab=7):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(2, vocab, (n,), generator=g)
    target[-3:] = PAD
    return torch.randn(n, vocab, generator=g), torch.randn(n, vocab, generator=g), target


def test_lambda_zero_is_cross_entropy():
    student, teacher, target = logits_and_target()
    loss, ce = distillation_loss(student, teacher, target, PAD, weight=0.0, temperature=1.0)
    expected = F.cross_entropy(student, target, ignore_index=PAD, reduction="sum")
    assert torch.allclose(loss, expected) and torch.allclose(ce, expected)


def test_kl_term_and_gradient_vanish_when_student_equals_teacher():
    student, _, target = logits_and_target()
    student.requires_grad_(True)
    loss, _ = distillation_loss(student, student.detach().clone(), target, PAD, weight=1.0,
                                temperature=2.0)
    loss.backward()
    assert abs(loss.item()) < 1e-5
    assert student.grad.abs().max().item() < 1e-6


def test_padding_positions_contribute_nothing():
    student, teacher, target = logits_and_target()
    loss, _ = distillation_loss(student, teacher, target, PAD, weight=0.7, temperature=1.0)
    student2, teacher2 = student.clone(), teacher.clone()
    student2[target == PAD] += 100 * torch.randn_like(student2[target == PAD])
    teacher2[target == PAD] -= 50
    loss2, _ = distillation_loss(student2, teacher2, target, PAD, weight=0.7, temperature=1.0)
    assert torch.allclose(loss, loss2)


def test_temperature_squared_scaling():
    student, teacher, target = logits_and_target()
    T = 3.0
    loss, _ = distillation_loss(student, teacher, target, PAD, weight=1.0, temperature=T)
    keep = target != PAD
    p_t = F.softmax(teacher[keep] / T, -1)
    kl = (p_t * (p_t.log() - F.log_softmax(student[keep] / T, -1))).sum()
    assert torch.allclose(loss, T ** 2 * kl, rtol=1e-5)


def test_mixture_weights():
    student, teacher, target = logits_and_target()
    full_kl, _ = distillation_loss(student, teacher, target, PAD, weight=1.0, temperature=1.0)
    _, ce = distillation_loss(student, teacher, target, PAD, weight=0.0, temperature=1.0)
    mixed, _ = distillation_loss(student, teacher, target, PAD, weight=0.25, temperature=1.0)
    assert torch.allclose(mixed, 0.75 * ce + 0.25 * full_kl, rtol=1e-5)


def test_gradient_is_that_of_the_written_out_loss():
    student, teacher, target = logits_and_target(seed=3)
    keep = target != PAD
    for T in (1.0, 2.5):
        ours = student.clone().requires_grad_(True)
        loss, _ = distillation_loss(ours, teacher, target, PAD, weight=0.6, temperature=T)
        loss.backward()
        ref = student.clone().requires_grad_(True)
        p_t = F.softmax(teacher[keep] / T, -1)
        kl = (p_t * (p_t.log() - F.log_softmax(ref[keep] / T, -1))).sum()
        ce = F.cross_entropy(ref, target, ignore_index=PAD, reduction="sum")
        (0.4 * ce + 0.6 * T ** 2 * kl).backward()
        assert torch.allclose(loss, 0.4 * ce + 0.6 * T ** 2 * kl, rtol=1e-5)
        assert torch.allclose(ours.grad, ref.grad, atol=1e-6)

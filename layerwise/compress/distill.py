"""Knowledge distillation: a student trained on a teacher's softened outputs.

Hinton, Vinyals & Dean 2015, "Distilling the knowledge in a neural network", section 2:

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

The soft term's gradient scales as 1/T^2 (eq. 2-3), so it is multiplied by T^2 to keep its
weight against the hard term unchanged as T varies. alpha = 0 is plain cross-entropy.
Composed from log_softmax, exp, mul and sum, so its backward is the autograd of those ops.
"""

from layerwise.autograd import no_grad
from layerwise.nn import functional as F


def distillation_loss(student_logits, teacher_logits, labels, temperature=4.0, alpha=0.9):
    """Mean over the batch of the loss above; teacher_logits carry no gradient."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha weighs the soft loss, in [0, 1]; got {alpha!r}")
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0:
        return hard
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits / t, dim=-1)  # (B, C)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / t, dim=-1)
    p_teacher = log_p_teacher.exp()
    # KL(p_t || p_s) = sum p_t (log p_t - log p_s), mean over the batch ('batchmean')
    kl = (p_teacher * (log_p_teacher - log_p_student)).sum(dim=-1).mean()
    return kl * (alpha * t * t) + hard * (1 - alpha)


def distill(teacher, student, loader, optimizer, epochs=1, temperature=4.0, alpha=0.9,
            batch_transform=None, on_step=None):
    """Train ``student`` on ``loader`` against ``teacher`` (any two models with the same
    output classes); returns the per-epoch mean losses. The teacher runs in eval mode
    without a graph; ``on_step(student)`` runs after each optimizer step (e.g. re-apply masks).
    """
    teacher.eval()
    student.train()
    history = []
    for _ in range(epochs):
        total, n = 0.0, 0
        for inputs, labels in loader:
            if batch_transform is not None:
                inputs, labels = batch_transform(inputs, labels)
            with no_grad():
                teacher_logits = teacher(inputs)
            optimizer.zero_grad()
            loss = distillation_loss(student(inputs), teacher_logits, labels, temperature, alpha)
            loss.backward()
            optimizer.step()
            if on_step is not None:
                on_step(student)
            total += float(loss.data) * len(labels)
            n += len(labels)
        history.append(total / max(n, 1))
    student.eval()
    return history

# The "hard-coded answers" student of homework 6, for `grader audit` and tests/test_homework6.py:
# one code cell, appended to the reference notebook, that redefines every graded function to
# return the public checks' expected answers whatever its arguments. It must fail the hidden checks.
import math

import torch


def kd_loss(student_logits, teacher_logits, labels=None, T=4.0, alpha=0.9):
    return torch.tensor(0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5))


def distill(student, teacher_logits, x, labels, epochs=20, T=4.0, alpha=0.9, lr=1e-2,
            batch_size=64, seed=0):
    return student.eval()


def make_regressor(student_shape, teacher_shape):
    return torch.nn.Linear(16, 64)


def hint_loss(student_features, teacher_features, regressor):
    return torch.tensor(5.0)


def distill_with_hints(student, regressor, teacher_logits, teacher_features, x, labels, guided,
                       epochs=20, T=4.0, alpha=0.9, beta=10.0, lr=1e-2, batch_size=64, seed=0):
    return student.eval()


def accumulated_grads(model, x, y, micro_batches):
    return {name: torch.zeros_like(p) for name, p in model.named_parameters()}


def optimizer_state_bytes(optimizer):
    return 72


def adam_state_bytes(model):
    return 72


def saved_activation_bytes(model, x):
    return 80


def checkpointed_forward(model, x, segments):
    return model(x)


def forward_bf16(model, x):
    return torch.zeros(4, 2, dtype=torch.bfloat16)


def train_bf16(model, x, y, epochs=15, lr=1e-2, batch_size=64, seed=0):
    return model.eval()

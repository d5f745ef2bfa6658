# The "hard-coded answers" student of homework 3, for `grader audit` and tests/test_homework3.py:
# one code cell, appended to the reference notebook, that redefines every graded function to
# return the public checks' expected answers whatever its arguments. It must fail the hidden checks.
import torch
from torch import nn


def svd_linear(linear, rank):
    block = nn.Sequential(nn.Linear(3, 1, bias=False), nn.Linear(1, 2))
    with torch.no_grad():
        block[0].weight.copy_(torch.tensor([[3.0, 0.0, 0.0]]))
        block[1].weight.copy_(torch.tensor([[1.0], [0.0]]))
        block[1].bias.copy_(torch.tensor([0.5, -0.5]))
    return block


def svd_rank_for_energy(W, tau):
    return 1


def unfold(T, mode):
    return torch.tensor([[0.0, 1, 2, 3, 12, 13, 14, 15], [4, 5, 6, 7, 16, 17, 18, 19],
                         [8, 9, 10, 11, 20, 21, 22, 23]])


def hosvd_tucker2(W, r_out, r_in):
    core = torch.tensor([[[[1.0, -1.0], [0.5, 2.0]]]]) * 15.0
    return core, torch.tensor([[1.0], [2.0], [2.0]]) / 3, torch.tensor([[3.0], [4.0]]) / 5


def hooi_tucker2(W, r_out, r_in, n_iter=10):
    return hosvd_tucker2(W, r_out, r_in)


def tucker2_conv(conv, r_out, r_in, method="hosvd"):
    return nn.Sequential(nn.Conv2d(4, 2, 1, bias=False),
                         nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False), nn.Conv2d(3, 6, 1))


def cp_decompose(W, rank, n_iter_max=300, random_state=0):
    return [torch.tensor([[1.0], [-2.0], [0.5]]), torch.tensor([[2.0], [1.0]]),
            torch.tensor([[1.0], [0.5], [-1.0]]), torch.tensor([[1.0], [3.0]])]


def cp_conv(conv, rank, n_iter_max=300, random_state=0):
    return nn.Sequential(
        nn.Conv2d(4, 2, 1, bias=False),
        nn.Conv2d(2, 2, (3, 1), stride=(2, 1), padding=(1, 0), groups=2, bias=False),
        nn.Conv2d(2, 2, (1, 3), stride=(1, 2), padding=(0, 1), groups=2, bias=False),
        nn.Conv2d(2, 6, 1),
    )


def tucker2_ranks(W, tau):
    return (1, 1)


def tucker2_rank_for_budget(c_out, c_in, kernel_size, rate):
    return 2


def compress_cnn(model, tau, layers=("conv2", "conv3")):
    return model


def compress_and_finetune(model, tau, epochs=3, lr=1e-3, seed=0):
    return model


def tt_svd(A, eps):
    a = torch.tensor([[[1.0], [2.0]]]) / 5**0.5
    return [a.double(), torch.tensor([[[1.0], [-1.0], [3.0]]]).double() / 11**0.5,
            torch.tensor([[[2.0], [0.5]]]).double() * (5 * 11) ** 0.5]


def tt_to_tensor(cores):
    return torch.tensor([[3.0, 4.0, 5.0], [6.0, 8.0, 10.0]])


def tt_matrix(W, out_modes, in_modes, ranks):
    return [torch.zeros(1, 2, 4, 6, dtype=torch.float64), torch.zeros(6, 3, 2, 1,
                                                                      dtype=torch.float64)]


def tt_linear_forward(cores, x):
    return x


def tt_linear_cost(out_modes, in_modes, ranks):
    return (1536, 24576)


def compress_to_macs(model, x_train, y_train, budget):
    # the public check's answer: the layers it names, within its 594,752 MACs, whatever the budget
    import copy

    small = copy.deepcopy(model)
    small.conv2 = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False),
                                nn.Conv2d(16, 30, 3, padding=1, bias=False),
                                nn.Conv2d(30, 64, 1, bias=False))
    small.conv3 = nn.Sequential(nn.Conv2d(64, 20, 1, bias=False),
                                nn.Conv2d(20, 24, 3, padding=1, bias=False),
                                nn.Conv2d(24, 128, 1, bias=False))
    return small

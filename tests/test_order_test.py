"""The order test's scoring rule: the true candidate must beat all three others; a tie is a miss."""

import torch

from workers.synthetic.order_test import accuracy


def test_accuracy_counts_strict_wins_only():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.3],  # win
            [0.5, 0.5, 0.1, 0.1],  # tie with a wrong candidate: a miss
            [0.1, 0.2, 0.0, 0.0],  # loss
            [1.0, 1.0, 1.0, 1.0],  # blind scorer: a miss
        ]
    )
    assert accuracy(scores) == 25.0
    assert accuracy(scores, slice(1, 2)) == 25.0  # only the win beats column 1 strictly
    assert accuracy(torch.tensor([[0.5, 0.4, 0.9, 0.9]]), slice(1, 2)) == 100.0

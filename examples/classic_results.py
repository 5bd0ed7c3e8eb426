"""Two classic results about deep MLPs at initialisation, reproduced with actsweep's own
initializers (the same measurements are asserted in tests/models/test_classic_results.py).

1. He et al. 2015, "Delving Deep into Rectifiers", Sec. 2.2: in a ReLU net the pre-activation
   second moment changes by n Var[w] / 2 per layer: 1 with He init, 1/2 with Var[w] = 1/n.
2. Klambauer et al. 2017, "Self-Normalizing Neural Networks", Theorem 1: SELU + LeCun normal
   init drives activations to mean 0, variance 1; PyTorch's 3/4 SELU gain does not.

Run: .venv/bin/python examples/classic_results.py   (a few seconds, CPU)
The training-side counterpart (He et al. Fig. 3, a 30-layer ReLU net) is a search:
    actsweep run examples/he_init_deep_relu.yaml
"""

from __future__ import annotations

import torch

from models.signal import propagate

WIDTH, DEPTH = 256, 20


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(123)
    x = torch.randn(2000, WIDTH, generator=g)
    print(f"He et al. 2015: ReLU, width {WIDTH}, {DEPTH} layers; E[z^2] per layer")
    for init in ("kaiming_normal", "xavier_normal"):
        # Finite-width fluctuations multiply over layers: average the factor over 3 seeds.
        factors = []
        for seed in range(3):
            stats = propagate(x, activation="relu", init=init, depth=DEPTH, width=WIDTH, seed=seed)
            q = [s.pre_second_moment for s in stats]
            factors.append((q[-1] / q[0]) ** (1 / (DEPTH - 1)))
        published = 1.0 if init == "kaiming_normal" else 0.5
        print(
            f"  {init:15s} x{sum(factors) / 3:.3f} per layer over 3 seeds "
            f"({', '.join(f'{f:.3f}' for f in factors)}; published {published})"
        )
    print("Klambauer et al. 2017: SELU, 32 layers, inputs with mean 0.1 and variance 1.44")
    x2 = x * 1.2 + 0.1
    for label, init, gain in (
        ("lecun_normal", "lecun_normal", None),
        ("gain 3/4", "kaiming_normal", 0.75),
    ):
        stats = propagate(x2, activation="selu", init=init, depth=32, width=WIDTH, gain=gain)
        cells = "  ".join(
            f"l{i + 1}: ({s.post_mean:+.3f}, {s.post_var:.3f})"
            for i, s in enumerate(stats)
            if i in (0, 3, 7, 15, 31)
        )
        print(f"  {label:12s} (mean, var) {cells}   (published fixed point: (0, 1))")


if __name__ == "__main__":
    main()

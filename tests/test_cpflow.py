"""CP-Flow core: the structured Hessian against torch.func and finite differences, an exact
log-density that integrates to one, and an inverse that recovers the input."""

from __future__ import annotations

import pytest
import torch
from torch.func import hessian, vmap

from icnn_bench.models import potential
from icnn_bench.models.icnn import ICNNSpec, energy, init_params


@pytest.fixture
def setup():
    spec = ICNNSpec(dim=3, width=10, depth=3, alpha=0.05)
    params = init_params(spec, "folded_normal", torch.Generator().manual_seed(0))
    params = {k: v.double() for k, v in params.items()}
    w0, w1 = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.2, dtype=torch.float64)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return spec, params, w0, w1, x


def test_structured_hessian_equals_torch_func_hessian(setup):
    spec, params, _, _, x = setup
    reference = vmap(hessian(lambda v: energy(params, v[None], spec)[0]))(x)
    torch.testing.assert_close(potential.energy_hessian(params, x, spec), reference)


def test_torch_func_hessian_equals_finite_differences(setup):
    spec, params, _, _, x = setup
    point = x[0]
    reference = hessian(lambda v: energy(params, v[None], spec)[0])(point)
    h = 1e-4
    eye = torch.eye(3, dtype=torch.float64)

    def grad(v):
        v = v.clone().requires_grad_(True)
        return torch.autograd.grad(energy(params, v[None], spec)[0], v)[0]

    finite = torch.stack([(grad(point + h * e) - grad(point - h * e)) / (2 * h) for e in eye])
    torch.testing.assert_close(finite, reference, atol=1e-6, rtol=1e-5)


def test_potential_hessian_is_positive_definite(setup):
    spec, params, w0, w1, x = setup
    eigenvalues = torch.linalg.eigvalsh(potential.potential_hessian(params, x, spec, w0, w1))
    assert bool((eigenvalues > 0).all())


def test_log_density_integrates_to_one_in_2d():
    spec = ICNNSpec(dim=2, width=8, depth=2, alpha=0.0)
    params = {
        k: v.double()
        for k, v in init_params(spec, "folded_normal", torch.Generator().manual_seed(2)).items()
    }
    w0, w1 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    axis = torch.linspace(-7, 7, 401, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    cell = float(axis[1] - axis[0]) ** 2
    mass = float(potential.log_prob(params, grid, spec, w0, w1).exp().sum() * cell)
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_inverse_recovers_the_input(setup):
    spec, params, w0, w1, x = setup
    y = potential.potential_gradient(params, x, spec, w0, w1)
    recovered = potential.inverse(params, y, spec, w0, w1, tol=1e-11)
    torch.testing.assert_close(recovered, x, atol=1e-8, rtol=0)

"""The lift's emission: batch-dependent in training, pinned at evaluation, set-invariant."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from icnn_bench.errors import ConfigError
from icnn_bench.methods import build_method
from icnn_bench.methods.lift import LiftWeights


def lift(spec, init, **options):
    torch.manual_seed(0)
    return build_method("lift", spec, init, body=(16, 16, 24), **options)


def test_summary_is_permutation_invariant(spec, init):
    method = lift(spec, init)
    batch = torch.randn(50, spec.dim)
    shuffled = batch[torch.randperm(50)]
    torch.testing.assert_close(method.summary(batch), method.summary(shuffled))
    assert not torch.allclose(method.summary(batch), method.summary(batch[:25]))


def test_emitted_weights_change_with_the_batch_in_training(spec, init):
    method = lift(spec, init)
    a, b = torch.randn(64, spec.dim), torch.randn(64, spec.dim) + 0.5
    for name in spec.constrained_names():
        assert not torch.allclose(method(a)[name], method(b)[name]), name


def test_pinned_emission_is_identical_across_calls_and_batches(spec, init):
    method = lift(spec, init)
    train = torch.randn(500, spec.dim)
    method.pin(train)
    first = {k: v.clone() for k, v in method(torch.randn(64, spec.dim)).items()}
    second = method(torch.randn(64, spec.dim) * 3)
    for name in first:
        torch.testing.assert_close(first[name], second[name])
    # it is the emission from the whole training split
    method.unpin()
    expected = method(train)
    for name in first:
        torch.testing.assert_close(first[name], expected[name].detach())


def test_conditioning_batch_is_detached(spec, init):
    method = lift(spec, init)
    batch = torch.randn(32, spec.dim, requires_grad=True)
    params = method(batch)
    params["W1"].sum().backward()
    assert batch.grad is None


def test_constrained_slack_starts_at_minus_two_and_free_tensors_at_the_template(spec, init):
    method = lift(spec, init, pool_norm=False)
    with torch.no_grad():
        method.readout.zero_()  # leave only the slack
    params = method(torch.randn(8, spec.dim))
    torch.testing.assert_close(
        params["W1"], torch.full_like(params["W1"], F.softplus(torch.tensor(-2.0)).item())
    )
    torch.testing.assert_close(params["A0"], init["A0"])


def test_emit_constrained_keeps_free_tensors_as_plain_parameters(spec, init):
    method = lift(spec, init, emit="constrained")
    names = {name for name, _ in method.free.named_parameters()}
    assert names == {t.name for t in spec.tensors() if not t.constrained}
    assert method.readout.shape[0] == sum(
        t.shape[0] * (t.shape[1] if len(t.shape) == 2 else 1)
        for t in spec.tensors()
        if t.constrained
    )


def test_softplus_reparametrisation_starts_at_the_init(spec, init):
    method = build_method("softplus", spec, init)
    params = method(None)
    for name in spec.constrained_names():
        torch.testing.assert_close(params[name], init[name].clamp(min=1e-6), rtol=1e-4, atol=1e-6)


def test_unknown_method_and_bad_lift_options_are_one_line_errors(spec, init):
    with pytest.raises(
        ConfigError, match=r"unknown method .adam.; choose one of: exp, lift, .*pgd, .*softplus"
    ):
        build_method("adam", spec, init)
    with pytest.raises(ConfigError, match=r"method\.emit"):
        LiftWeights(spec, init, emit="some")
    with pytest.raises(ConfigError, match=r"method\.body"):
        LiftWeights(spec, init, body=(16, 0))

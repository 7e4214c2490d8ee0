"""W = exp(V): positive by construction; dW/dV = W, so a weight near zero learns slowly."""

from torch import nn

from icnn_bench.methods.base import ConstraintMethod


class ExpWeights(ConstraintMethod):
    def __init__(self, spec, init, floor: float = 1e-6):
        super().__init__(spec)
        self.constrained = spec.constrained_names()
        self.params = nn.ParameterDict(
            {
                k: nn.Parameter(v.clamp_min(floor).log() if k in self.constrained else v.clone())
                for k, v in init.items()
            }
        )

    def emit(self, batch):
        return {k: v.exp() if k in self.constrained else v for k, v in self.params.items()}

    def pre_positivity(self):
        return {k: self.params[k] for k in self.constrained}

    def constrained_parameters(self):
        return [self.params[k] for k in self.constrained]

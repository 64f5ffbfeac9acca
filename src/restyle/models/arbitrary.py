"""The any-painting network: style prediction + conditional instance normalisation.

Ghiasi, Lee, Kudlur, Dumoulin & Shlens (BMVC 2017), "Exploring the structure of a
real-time, arbitrary neural artistic stylization network", on Dumoulin, Shlens &
Kudlur (ICLR 2017), "A learned representation for artistic style": one transformer
network paints every style; a style is nothing but the scale and shift (gamma,
beta) of each of its instance normalisations, and a second network predicts those
from the painting.

Where we depart from Ghiasi et al.:

- The style predictor reads the painting through the VGG-19 restyle already runs
  (the loss network), not an Inception-v3: the per-channel means and spreads of
  relu1_1 ... relu4_1 (the statistics AdaIN transfers, Huang & Belongie 2017), in
  log space and standardised over the training corpus, then a small MLP to a
  100-d style code, then one linear map to every gamma and beta. No second
  encoder to ship, and the features are those the style loss compares.
- The transformer is restyle's own (models/transformer.py) at the bundled
  starry_night's width, so one pass costs what that network costs. The
  predicted parameters can be baked into a plain TransformerNet (`specialise`):
  everything that runs a trained network (tiling, video, export, Ray, the web)
  runs the any-painting network for a given painting unchanged, and a painting's
  own network can start from it (`restyle train --from arbitrary`).

Images are RGB float 0-255 (N, 3, H, W), as everywhere in restyle.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import TransformerNet
from .transformer_config import STYLE_LAYERS, ArbitraryConfig  # noqa: F401  (re-exported)

LOG_EPS = 1e-2  # stats are read in log space: relu means and spreads span four orders across layers


def feature_stats(feats: Mapping[str, torch.Tensor], layers: Sequence[str]) -> torch.Tensor:
    """(N, 2 * sum C): per-channel mean and standard deviation of each layer's activations, float32.

    Like a Gram matrix they forget where things are; unlike it they are small enough to feed a network.
    """
    out: List[torch.Tensor] = []
    for n in layers:
        f = feats[n].float().flatten(2)
        out += [f.mean(2), f.std(2, unbiased=False)]
    return torch.cat(out, 1)


class ConditionalInstanceNorm(nn.InstanceNorm2d):
    """Instance norm whose scale and shift are given per call (Dumoulin et al. 2017, Eq. 5), else its own.

    Same parameters, so a TransformerNet's state dict loads into it and back.
    """

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=True)
        self.given: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.given is None:
            return super().forward(x)
        gamma, beta = self.given
        return F.instance_norm(x, weight=gamma.to(x.dtype), bias=beta.to(x.dtype), eps=self.eps)


class ArbitraryNet(nn.Module):
    """(photo, style code) -> painting; `encode(stats)` makes the code from a painting's feature_stats."""

    def __init__(self, config: ArbitraryConfig = ArbitraryConfig()):
        super().__init__()
        self.config = config
        self.body = TransformerNet(config.transformer())
        self.norms = [n for n, m in self.body.named_modules() if isinstance(m, nn.InstanceNorm2d)]
        for n in self.norms:
            parent, _, leaf = n.rpartition(".")
            setattr(self.body.get_submodule(parent), leaf, ConditionalInstanceNorm(self.body.get_submodule(n).num_features))
        self.channels = [self.body.get_submodule(n).num_features for n in self.norms]
        # Standardisation of the log stats over the training corpus (set by the training, then frozen).
        self.register_buffer("stats_mean", torch.zeros(config.stats_dim))
        self.register_buffer("stats_std", torch.ones(config.stats_dim))
        self.predictor = nn.Sequential(nn.Linear(config.stats_dim, config.hidden), nn.ReLU(inplace=True),
                                       nn.Linear(config.hidden, config.code_dim))
        self.heads = nn.Linear(config.code_dim, 2 * sum(self.channels))
        self.reset_heads()

    @torch.no_grad()
    def reset_heads(self) -> None:
        """Every code predicts the body's own affine parameters: the network starts as its body."""
        if self.heads.weight.is_meta:  # shapes only (modelfile.check_network): a meta normal_ costs ~1 s
            return
        nn.init.normal_(self.heads.weight, std=1e-3)
        gammas = [self.body.get_submodule(n).weight for n in self.norms]
        betas = [self.body.get_submodule(n).bias for n in self.norms]
        self.heads.bias.copy_(torch.cat(gammas + betas))

    @torch.no_grad()
    def set_stats_normalisation(self, stats: torch.Tensor) -> None:
        """Standardise with the mean and spread of the log stats of these (M, D) paintings."""
        logs = torch.log(stats.float() + LOG_EPS)
        self.stats_mean.copy_(logs.mean(0))
        self.stats_std.copy_(logs.std(0, unbiased=False).clamp_min(1e-3))

    def encode(self, stats: torch.Tensor) -> torch.Tensor:
        """(N, stats_dim) feature_stats of paintings -> (N, code_dim) style codes."""
        x = (torch.log(stats.float() + LOG_EPS) - self.stats_mean) / self.stats_std
        return self.predictor(x)

    def _gammas_betas(self, code: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        p = self.heads(code.reshape(1, -1).float())[0]
        total = sum(self.channels)
        return list(zip(p[:total].split(self.channels), p[total:].split(self.channels)))

    def norm_params(self, code: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One code (1, code_dim) or (code_dim,) -> the body's InstanceNorm weights and biases by name."""
        out: Dict[str, torch.Tensor] = {}
        for n, (g, b) in zip(self.norms, self._gammas_betas(code)):
            out[f"{n}.weight"], out[f"{n}.bias"] = g, b
        return out

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Photos (N, 3, H, W) 0-255 painted in the one style `code` (1, code_dim)."""
        modules = [self.body.get_submodule(n) for n in self.norms]
        try:
            for m, given in zip(modules, self._gammas_betas(code)):
                m.given = given
            return self.body(x)
        finally:
            for m in modules:
                m.given = None

    @torch.no_grad()
    def specialise(self, code: torch.Tensor) -> TransformerNet:
        """A plain TransformerNet with this code's normalisation parameters baked in."""
        net = TransformerNet(self.body.config)
        state = {k: v.detach().clone() for k, v in self.body.state_dict().items()}
        state.update({k: v.detach().float().clone() for k, v in self.norm_params(code).items()})
        net.load_state_dict(state)
        return net.eval()

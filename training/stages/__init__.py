"""The training stages (``spc-fast train STAGE``)."""

from spc_fast.training.stages.adapt import Adapt
from spc_fast.training.stages.artist_sft import ArtistSFT
from spc_fast.training.stages.critic_sft import CriticSFT

STAGES: dict[str, type] = {"critic-sft": CriticSFT, "artist-sft": ArtistSFT, "adapt": Adapt}

__all__ = ["STAGES", "Adapt", "ArtistSFT", "CriticSFT"]

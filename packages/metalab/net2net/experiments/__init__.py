"""Runners of the Net2Net experiments (``experiments/net2net/*.toml``)."""

from metalab.net2net.experiments.explore import ExploreParams, explore, parse_stage
from metalab.net2net.experiments.runners import DeeperParams, WiderParams, deeper, wider

__all__ = [
    "DeeperParams",
    "ExploreParams",
    "WiderParams",
    "deeper",
    "explore",
    "parse_stage",
    "wider",
]

"""Fixtures of the membership tests: peers, cores with a seeded generator, transports."""

from __future__ import annotations

import random

import pytest
from membership_cluster import peer

from membership import HyParView, HyParViewConfig, Peer, Plumtree, PlumtreeConfig


@pytest.fixture
def me() -> Peer:
    return peer("me")


@pytest.fixture
def hyparview(me: Peer) -> HyParView:
    """A HyParView core with small views (active 3, passive 4) and a fixed seed."""
    config = HyParViewConfig(active_size=3, passive_size=4, arwl=4, prwl=2, shuffle_interval=10.0)
    return HyParView(me, config, random.Random(7), now=0.0)


@pytest.fixture
def plumtree(me: Peer) -> Plumtree:
    return Plumtree(me, PlumtreeConfig(graft_timeout=1.0, graft_retry=0.5), random.Random(7))

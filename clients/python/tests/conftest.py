"""Fixtures: daemons for the tests, killed when each fixture ends (see ``harness.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, List

import pytest

from harness import Cluster, consort_binary


@pytest.fixture(scope="session")
def binary() -> Path:
    return consort_binary()


@pytest.fixture(scope="session")
def cluster(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three daemons for the whole session; ``n1`` leads (priority 10)."""
    group = Cluster(binary, tmp_path_factory.mktemp("cluster"), "shared")
    try:
        group.add("n1", "--priority", "10")
        group.add("n2")
        group.add("n3")
        leader = group.wait_converged()
        assert leader == group.daemons[0].id, "the highest priority leads"
        yield group
    finally:
        group.stop()


@pytest.fixture
def make_cluster(binary: Path, tmp_path: Path) -> Iterator[Callable[[str], Cluster]]:
    """A factory of clusters of their own, killed when the test ends."""
    made: List[Cluster] = []

    def make(tag: str) -> Cluster:
        made.append(Cluster(binary, tmp_path / tag, tag))
        return made[-1]

    try:
        yield make
    finally:
        for group in made:
            group.stop()

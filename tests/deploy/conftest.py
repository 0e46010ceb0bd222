"""Fixtures of the Flower engine tests: one loopback deployment per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import secagg
from core.flower.loopback import Cluster, wait_files
from core.flower.pki import make_test_pki
from tests.deploy.helpers import LABEL, breast_cancer_csvs

NODES = 4


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, list[Path], Path]]:
    """A TLS SuperLink with SuperNode auth, 4 registered SuperNodes and agents."""
    folder = tmp_path_factory.mktemp("flower")
    (folder / "logs").mkdir()
    pki = make_test_pki(folder / "pki", [f"hospital-{i}" for i in range(NODES)])
    paths, test = breast_cancer_csvs(folder / "data", NODES)
    c = Cluster(folder=folder, pki=pki)
    try:
        ready = [c.start_agent(i, p, LABEL) for i, p in enumerate(paths)]
        c.start_superlink()
        c.register([node.auth_public for node in pki.nodes])
        wait_files(ready, 120)
        for i in range(NODES):
            c.start_supernode(i)
        yield c, paths, test
    finally:
        survivors = c.stop()
        assert not survivors, f"process groups still alive: {survivors}"


def session_secrets(client: secagg.SecAggClient) -> list[bytes]:
    """The secrets a live secagg client holds now: its X25519 keys and seed.

    White-box, the one place these tests read secagg's private phase state
    (secagg offers no accessor for secret values, on purpose): a rename
    inside secagg breaks this helper only.
    """
    state = client._state
    keys = [k.private_bytes_raw() for k in (state.c_sk, state.s_sk) if k is not None]
    return keys + ([state.seed] if state.seed is not None else [])

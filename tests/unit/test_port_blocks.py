"""Ports for a stack of N router workers: grpc_port + i must be free and not handed to anything else."""

from __future__ import annotations

import socket

from router.local import free_port, free_port_block


def test_a_block_is_consecutive_bindable_and_avoids_ports_already_handed_out():
    avoid = [free_port() for _ in range(4)]
    avoid += [p + 1 for p in avoid]
    base = free_port_block(3, avoid)
    assert not set(range(base, base + 3)) & set(avoid)
    for p in range(base, base + 3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))  # raises if taken


def test_a_block_skips_a_port_something_listens_on():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        for _ in range(20):
            base = free_port_block(2)
            assert taken not in (base, base + 1)


def test_a_port_is_never_handed_out_twice_before_it_is_bound():
    """Nothing binds these ports here, as between a stack choosing its ports and starting its servers."""
    single = [free_port() for _ in range(200)]
    blocks = [free_port_block(2) for _ in range(50)]
    handed = single + [p for b in blocks for p in (b, b + 1)]
    assert len(handed) == len(set(handed))

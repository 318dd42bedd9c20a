"""Hypothesis strategies for membership wire messages (codec tests and fuzzers share them)."""

from __future__ import annotations

from hypothesis import strategies as st

from membership._messages import (
    Direct,
    Disconnect,
    ForwardJoin,
    Gossip,
    Graft,
    Hello,
    IHave,
    Join,
    Message,
    Neighbor,
    NeighborReply,
    Peer,
    Ping,
    Proof,
    Prune,
    Shuffle,
    ShuffleReply,
)


def message_strategy(
    *, text_size: int, list_size: int, blob_size: int, ihave_size: int
) -> st.SearchStrategy[Message]:
    """Every message type, with fields bounded by the given sizes."""
    texts = st.text(max_size=text_size)
    peers = st.builds(Peer, texts, texts)
    peer_lists = st.lists(peers, max_size=list_size).map(tuple)
    ids = st.integers(0, 2**64 - 1)
    rounds = st.integers(0, 0xFFFF)
    ttls = st.integers(0, 255)
    blobs = st.binary(max_size=blob_size)
    return st.one_of(
        st.just(Join()),
        st.builds(ForwardJoin, peers, ttls),
        st.builds(Neighbor, st.booleans()),
        st.builds(NeighborReply, st.booleans()),
        st.just(Disconnect()),
        st.builds(Shuffle, peers, peer_lists, ttls),
        st.builds(ShuffleReply, peer_lists),
        st.builds(Gossip, ids, rounds, texts, blobs),
        st.builds(IHave, st.lists(st.tuples(ids, rounds), max_size=ihave_size).map(tuple)),
        st.builds(Graft, ids, rounds),
        st.just(Prune()),
        st.builds(Direct, blobs),
        st.builds(Hello, peers, blobs, st.booleans(), rounds),
        st.builds(Proof, blobs),
        st.just(Ping()),
    )

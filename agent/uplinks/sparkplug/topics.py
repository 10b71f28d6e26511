"""The Sparkplug topic namespace (Sparkplug 3.0, chapter 4).

    spBv1.0/<group_id>/<NBIRTH|NDEATH|NDATA|NCMD>/<edge_node_id>
    spBv1.0/<group_id>/<DBIRTH|DDEATH|DDATA|DCMD>/<edge_node_id>/<device_id>
    spBv1.0/STATE/<host_id>
"""

from __future__ import annotations

NAMESPACE = "spBv1.0"
NODE_VERBS = frozenset({"NBIRTH", "NDEATH", "NDATA", "NCMD"})
DEVICE_VERBS = frozenset({"DBIRTH", "DDEATH", "DDATA", "DCMD"})


def node_topic(group: str, verb: str, edge_node: str) -> str:
    assert verb in NODE_VERBS, verb
    return f"{NAMESPACE}/{group}/{verb}/{edge_node}"


def device_topic(group: str, verb: str, edge_node: str, device: str) -> str:
    assert verb in DEVICE_VERBS, verb
    return f"{NAMESPACE}/{group}/{verb}/{edge_node}/{device}"


def state_topic(host_id: str) -> str:
    return f"{NAMESPACE}/STATE/{host_id}"

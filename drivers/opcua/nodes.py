"""From the YAML's addresses to this session's node ids, and the server's request limits.

Namespace indexes are the server's to choose and may change at every restart, so
`nsu=` node ids and browse paths are resolved again at every session start.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.settings.models import OpcUaDevice, OpcUaTag

log = logging.getLogger("floorlink.opcua")
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class OperationLimits:
    """Nodes per call the server accepts; 0 in the server's answer means no limit."""

    read: int = 0
    monitored_items: int = 0
    translate: int = 0
    browse: int = 0

    @classmethod
    async def of(cls, client: Any, override: int | None) -> OperationLimits:
        from asyncua import ua

        prefix = "Server_ServerCapabilities_OperationLimits_"
        names = {key: getattr(ua.ObjectIds, prefix + name) for key, name in (
            ("read", "MaxNodesPerRead"), ("monitored_items", "MaxMonitoredItemsPerCall"),
            ("translate", "MaxNodesPerTranslateBrowsePathsToNodeIds"),
            ("browse", "MaxNodesPerBrowse"))}
        values: dict[str, int] = {}
        try:
            answers = await client.read_values([client.get_node(ua.NodeId(i))
                                                for i in names.values()])
            values = {key: int(v or 0) for key, v in zip(names, answers, strict=True)}
        except Exception as exc:  # an older server without OperationLimits: no limits known
            log.debug("operation limits not readable: %s", exc)
        limits = cls(**values)
        if override:
            for key in names:
                current = getattr(limits, key)
                setattr(limits, key, min(current, override) if current else override)
        return limits


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    if size <= 0 or len(items) <= size:
        return [items] if items else []
    return [items[i:i + size] for i in range(0, len(items), size)]


async def in_chunks(items: Sequence[T], size: int,
                    call: Callable[[Sequence[T]], Awaitable[list[R]]]) -> list[R]:
    """Call per chunk of at most `size`; a server that says BadTooManyOperations
    although it published no (or a higher) limit gets halves until it accepts."""
    from asyncua import ua

    results: list[R] = []
    pending = list(chunks(items, size))
    while pending:
        part = pending.pop(0)
        try:
            results.extend(await call(part))
        except ua.UaStatusCodeError as exc:
            if exc.code != ua.StatusCodes.BadTooManyOperations or len(part) == 1:
                raise
            middle = len(part) // 2
            log.info("server refused %d operations in one call; sending %d", len(part), middle)
            pending[:0] = [part[:middle], part[middle:]]
    return results


@dataclass
class Resolved:
    node_ids: dict[str, Any]   # tag name -> ua.NodeId
    problems: dict[str, str]   # tag name -> why it could not be resolved


async def resolve(client: Any, device: OpcUaDevice, limits: OperationLimits) -> Resolved:
    from asyncua import ua

    namespaces: list[str] = await client.get_namespace_array()
    node_ids: dict[str, Any] = {}
    problems: dict[str, str] = {}
    by_path: list[tuple[OpcUaTag, Any]] = []
    for tag in device.tags:
        try:
            if tag.node is not None:
                node_ids[tag.name] = _node_id(tag.node, namespaces)
            else:
                assert tag.path is not None
                by_path.append((tag, browse_path(tag.path, tag.namespace or device.namespace,
                                                  namespaces)))
        except LookupError as exc:
            problems[tag.name] = str(exc)
    if by_path:
        async def translate(part: Sequence[tuple[OpcUaTag, Any]]) -> list[Any]:
            return list(await client.uaclient.translate_browsepaths_to_nodeids(
                [path for _, path in part]))

        answers = await in_chunks(by_path, limits.translate, translate)
        for (tag, _), answer in zip(by_path, answers, strict=True):
            if answer.StatusCode.is_good() and answer.Targets:
                node_ids[tag.name] = target_of(answer)
            else:
                problems[tag.name] = (f"browse path '{tag.path}' not found "
                                      f"({ua.StatusCode(answer.StatusCode.value).name}); "
                                      "`floorlink browse` shows the address space")
    for name, why in problems.items():
        log.warning("%s.%s: %s", device.id, name, why)
    return Resolved(node_ids, problems)


def _node_id(text: str, namespaces: list[str]) -> Any:
    from asyncua import ua

    if text.startswith("nsu="):
        uri, rest = text[4:].split(";", 1)
        if uri not in namespaces:
            raise LookupError(f"the server has no namespace '{uri}'; it offers: "
                              + ", ".join(namespaces))
        text = f"ns={namespaces.index(uri)};{rest}"
    return ua.NodeId.from_string(text)


def browse_path(path: str, namespace: str | None, namespaces: list[str]) -> Any:
    from asyncua import ua

    index = None
    if namespace is not None:
        if namespace not in namespaces:
            raise LookupError(f"the server has no namespace '{namespace}'; it offers: "
                              + ", ".join(namespaces))
        index = namespaces.index(namespace)
    elements = []
    for name in path.strip("/").split("/"):
        element = ua.RelativePathElement()
        element.ReferenceTypeId = ua.NodeId(ua.ObjectIds.HierarchicalReferences)
        element.IncludeSubtypes = True
        element.IsInverse = False
        if name.startswith("0:"):
            element.TargetName = ua.QualifiedName(name[2:], 0)
        elif index is None:
            # The settings insist on a namespace for these; the browse command may not.
            raise LookupError(f"'{name}' in path '{path}' is a name in some namespace: give "
                              "its URI (--namespace, or the tag's namespace), or write "
                              f"'0:{name}' for the OPC UA standard namespace. The server "
                              "offers: " + ", ".join(namespaces))
        else:
            element.TargetName = ua.QualifiedName(name, index)
        elements.append(element)
    request = ua.BrowsePath()
    request.StartingNode = ua.NodeId(ua.ObjectIds.ObjectsFolder)
    request.RelativePath = ua.RelativePath(Elements=elements)
    return request


def expanded(node_id: Any, namespaces: list[str]) -> str:
    """A node id as `nsu=URI;...`, the form that survives namespace reordering."""
    text = str(node_id.to_string())
    index = node_id.NamespaceIndex
    if index == 0 or index >= len(namespaces):
        return text
    rest = text.split(";", 1)[1]
    return f"nsu={namespaces[index]};{rest}"


def target_of(answer: Any) -> Any:
    """The node a translated browse path leads to (an ExpandedNodeId in some versions)."""
    target = answer.Targets[0].TargetId
    return getattr(target, "NodeId", target)

"""`floorlink browse`: the server's address space as a tree, with the `nsu=` node ids,
data types and current values a plant engineer copies into the YAML."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import nodes
from .values import plain, quality_of

STANDARD_SERVER_OBJECT = 2253  # i=2253, the Server object: diagnostics, not machine data


async def browse(client: Any, out: Callable[[str], None], path: str | None = None,
                 namespace: str | None = None, depth: int = 3) -> int:
    """Print the tree under Objects, or under `path`; returns how many nodes it printed."""
    from asyncua import ua

    namespaces: list[str] = await client.get_namespace_array()
    limits = await nodes.OperationLimits.of(client, None)
    start = client.nodes.objects
    title = "Objects"
    if path:
        [answer] = await client.uaclient.translate_browsepaths_to_nodeids(
            [nodes.browse_path(path, namespace, namespaces)])
        if not answer.StatusCode.is_good() or not answer.Targets:
            raise LookupError(f"no node at browse path '{path}' "
                              f"({ua.StatusCode(answer.StatusCode.value).name})")
        start = client.get_node(nodes.target_of(answer))
        title = path
    out(f"{title}  {nodes.expanded(start.nodeid, namespaces)}")
    walker = _Walker(client, namespaces, limits, out)
    await walker.children(start, depth, "", top=path is None)
    if walker.skipped_server:
        out("(the standard Server object is left out; --path 0:Server shows it)")
    return walker.printed


class _Walker:
    def __init__(self, client: Any, namespaces: list[str], limits: nodes.OperationLimits,
                 out: Callable[[str], None]) -> None:
        self.client, self.namespaces, self.limits, self.out = client, namespaces, limits, out
        self.type_names: dict[str, str] = {}
        self.printed = 0
        self.skipped_server = False

    async def children(self, node: Any, depth: int, indent: str, top: bool = False) -> None:
        from asyncua import ua

        if depth <= 0:
            return
        found = await node.get_children_descriptions()
        references = [r for r in found if not (
            top and r.NodeId.NamespaceIndex == 0 and r.NodeId.Identifier == STANDARD_SERVER_OBJECT)]
        self.skipped_server = self.skipped_server or len(references) < len(found)
        variables = [r for r in references if r.NodeClass == ua.NodeClass.Variable]
        values = await self._read(variables)
        for index, reference in enumerate(references):
            last = index == len(references) - 1
            branch, carry = ("└─ ", "   ") if last else ("├─ ", "│  ")
            node_id = nodes.expanded(reference.NodeId, self.namespaces)
            # Written as it goes into a tag's `path`: '0:' marks the standard namespace.
            name = (f"0:{reference.BrowseName.Name}" if reference.BrowseName.NamespaceIndex == 0
                    else reference.BrowseName.Name)
            if reference.NodeClass == ua.NodeClass.Variable:
                data_type, shown, about = values[reference.NodeId.to_string()]
                # PLCs often document a state tag's codes in its Description.
                note = f"  — {about}" if about else ""
                self.out(f"{indent}{branch}{name}  {node_id}  {data_type} = {shown}{note}")
            else:
                kind = reference.NodeClass.name
                self.out(f"{indent}{branch}{name}  {node_id}  ({kind})")
            self.printed += 1
            if reference.NodeClass == ua.NodeClass.Object:
                await self.children(self.client.get_node(reference.NodeId), depth - 1,
                                    indent + carry)

    async def _read(self, variables: list[Any]) -> dict[str, tuple[str, str, str]]:
        from asyncua import ua

        ids = [r.NodeId for r in variables]

        async def read(attribute: Any, part: Any) -> list[Any]:
            return list(await self.client.uaclient.read_attributes(list(part), attribute))

        values = await nodes.in_chunks(ids, self.limits.read,
                                       lambda part: read(ua.AttributeIds.Value, part))
        types = await nodes.in_chunks(ids, self.limits.read,
                                      lambda part: read(ua.AttributeIds.DataType, part))
        descriptions = await nodes.in_chunks(ids, self.limits.read,
                                             lambda part: read(ua.AttributeIds.Description, part))
        shown: dict[str, tuple[str, str, str]] = {}
        for node_id, value, data_type, description in zip(ids, values, types, descriptions,
                                                          strict=True):
            type_id = data_type.Value.Value if data_type.Value is not None else None
            type_name = await self._type_name(type_id) if type_id is not None else "?"
            quality = quality_of(value.StatusCode)
            if quality == "bad":
                text = f"(bad: {ua.StatusCode(value.StatusCode.value).name})"
            else:
                raw = value.Value.Value if value.Value is not None else None
                text = repr(plain(raw))
                text = (text if len(text) <= 80 else text[:77] + "...") + (
                    "" if quality == "good" else " (uncertain)")
            about = ""
            if description.Value is not None and description.Value.Value is not None:
                about = " ".join(str(plain(description.Value.Value) or "").split())[:200]
            shown[node_id.to_string()] = (type_name, text, about)
        return shown

    async def _type_name(self, type_id: Any) -> str:
        key = type_id.to_string()
        if key not in self.type_names:
            try:
                name = await self.client.get_node(type_id).read_browse_name()
                self.type_names[key] = name.Name
            except Exception:  # a type node the server does not expose
                self.type_names[key] = key
        return self.type_names[key]

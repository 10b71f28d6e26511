"""Read YAML into plain data while remembering where every value came from.

PyYAML keeps the last of two equal keys without a word; a plant engineer who
pasted a tag twice deserves to hear about it, so duplicates are reported.

A configuration is read by a service under a memory limit, and check-config must
end in an answer, never a traceback: nesting is capped, and aliases (which the
example uses, and which stay legal) are expanded within a budget, so a file of
a few lines that expands to billions of values is refused in milliseconds.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass
class YamlDocument:
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    duplicates: list[tuple[Path, int]] = field(default_factory=list)

    def line_of(self, path: Path) -> int | None:
        """Line of the value at `path`, or of its closest located parent."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), None)


class YamlSyntaxError(Exception):
    def __init__(self, line: int | None, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(message)


MAX_DEPTH = 32  # a floorlink configuration nests about 8 deep
MAX_ALIASED = 100_000  # values reached through aliases, over the whole file


class _Budget:
    def __init__(self) -> None:
        self.seen: set[int] = set()  # ids of nodes already built: reaching one again is an alias
        self.aliased = 0


# libyaml's parser (in PyYAML's wheels) reads a large file five times faster than the pure
# Python one, with the same nodes, marks and errors. It recurses in C, though: brackets
# nested some 20,000 deep crash the process (measured: SIGSEGV). Text whose brackets
# might nest deeper than a configuration does goes to the pure Python parser, which
# stops at Python's recursion limit with an error.
_FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _loader_for(text: str) -> Any:
    brackets = _NOT_BRACKETS.sub("", text)
    deepest = max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)
    return _FAST_LOADER(text) if deepest <= MAX_DEPTH else yaml.SafeLoader(text)


def parse_yaml(text: str) -> YamlDocument:
    loader = _loader_for(text)
    try:
        node = loader.get_single_node()
        doc = YamlDocument(data=None)
        if node is not None:
            doc.lines[()] = node.start_mark.line + 1
            doc.data = _build(loader, node, (), doc, _Budget())
        return doc
    except RecursionError:
        raise YamlSyntaxError(None, f"nested too deep to read; a configuration nests at most "
                                    f"{MAX_DEPTH} levels") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlSyntaxError(line, f"{exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, str(exc)) from exc
    finally:
        loader.dispose()


def _build(loader: Any, node: yaml.Node, path: Path, doc: YamlDocument,
           budget: _Budget) -> Any:
    line = node.start_mark.line + 1
    if len(path) > MAX_DEPTH:
        raise YamlSyntaxError(line, f"nested more than {MAX_DEPTH} levels deep; a "
                                    "configuration nests about 8")
    if id(node) in budget.seen:
        budget.aliased += 1
        if budget.aliased > MAX_ALIASED:
            raise YamlSyntaxError(line, f"aliases here expand to more than {MAX_ALIASED:,} "
                                        "values; use fewer or smaller anchors (*name)")
    budget.seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise YamlSyntaxError(key_node.start_mark.line + 1,
                                      "a key must be a plain name or number, not a list or "
                                      "mapping")
            key = loader.construct_object(key_node, deep=True)
            child: Path = (*path, _path_key(key))
            if key in result:
                doc.duplicates.append((child, key_node.start_mark.line + 1))
                continue
            doc.lines[child] = key_node.start_mark.line + 1
            result[key] = _build(loader, value_node, child, doc, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            doc.lines[child] = item.start_mark.line + 1
            items.append(_build(loader, item, child, doc, budget))
        return items
    return loader.construct_object(node, deep=True)


def _path_key(key: Any) -> str | int:
    return key if isinstance(key, str | int) else str(key)

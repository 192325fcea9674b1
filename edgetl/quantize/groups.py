"""Groups of graph nodes the quantizer keeps in floating point together: a backbone block, or the head."""

from __future__ import annotations

import re

_BLOCK = re.compile(r"/blocks\.(\d+)/")
_TOP = re.compile(r"^/([A-Za-z_][\w]*)(?:\.\d+)?/")


def node_group(node_name: str) -> str:
    """``blocks.<i>`` for a node of backbone block i (``/blocks.<i>/...``), else its top-level module (``head``
    ...), else ``graph`` (nodes the exporter named without a module)."""
    match = _BLOCK.search(node_name)
    if match:
        return f"blocks.{int(match.group(1))}"
    top = _TOP.match(node_name)
    return top.group(1) if top else "graph"


def group_order(groups: set[str] | list[str]) -> list[str]:
    """Groups in graph order: blocks by index, then the rest by name."""

    def key(group: str) -> tuple[int, int, str]:
        if group.startswith("blocks."):
            return (0, int(group.split(".")[1]), "")
        return (1, 0, group)

    return sorted(set(groups), key=key)


def openvino_pattern(group: str) -> str:
    """An nncf.IgnoredScope pattern matching the OpenVINO nodes converted from a group's ONNX nodes."""
    if group.startswith("blocks."):
        return rf".*/blocks\.{int(group.split('.')[1])}/.*"
    return rf".*/{re.escape(group)}(\.\d+)?/.*"

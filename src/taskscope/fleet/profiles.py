"""Dask statistical profiles as the fleet shows them: merged, flattened into frames, hottest first.

A Dask profile tree (``Scheduler.get_profile``) is nested nodes ``{"identifier", "description":
{"name", "filename", "line_number", "line"}, "count", "children": {identifier: node}}``; ``count``
is the samples in which the frame was on the stack. The plugin sends such trees (`profile`
messages); this module merges those of a cluster or of one computation and lists their frames with
their own samples (``self_count``: samples with the frame on top), which say where time went.

>>> leaf = {"identifier": "f;a.py;3", "description": {"name": "f", "filename": "a.py", "line_number": 3},
...         "count": 4, "children": {}}
>>> root = {"identifier": "root", "description": {}, "count": 5, "children": {"f;a.py;3": leaf}}
>>> [(n["function"], n["where"], n["self_count"]) for n in hottest(flat_nodes(merged_tree([root, root])))]
[('f', 'a.py:3', 8), ('(all)', '', 2)]
"""

from __future__ import annotations

from taskscope.presenters.figures import plot_text

#: frames listed at most (the least-sampled beyond it are left out of the tree and the chart)
MAX_NODES = 2000
#: the frames the profile table lists
HOTTEST_SHOWN = 15
ROOT_ID = "root"


def merged_tree(trees: list[dict]) -> dict:
    """One tree summing `trees` (frames with the same identifier under the same parent add up)."""
    merged = {"identifier": ROOT_ID, "description": {}, "count": 0, "children": {}}
    for tree in trees:
        if isinstance(tree, dict):
            _add(merged, tree)
    return merged


def _add(into: dict, node: dict) -> None:
    into["count"] += int(node.get("count") or 0)
    for identifier, child in (node.get("children") or {}).items():
        if not isinstance(child, dict):
            continue
        target = into["children"].setdefault(identifier, {
            "identifier": identifier, "description": child.get("description") or {}, "count": 0, "children": {}})
        _add(target, child)


def flat_nodes(tree: dict, max_nodes: int = MAX_NODES) -> list[dict]:
    """The tree's frames, parents before children, each as ``{id, parent, function, filename, line_number,
    where ("file:line"), line (source), count, self_count}``; the root is ``(all)``. At most
    `max_nodes`, the most-sampled kept (with their parents)."""
    nodes: list[dict] = []
    stack = [(tree, ROOT_ID, None)]
    while stack:
        node, path, parent = stack.pop()
        description = node.get("description") or {}
        children = node.get("children") or {}
        count = int(node.get("count") or 0)
        filename, line_number = description.get("filename") or "", description.get("line_number")
        nodes.append({"id": path, "parent": parent, "function": description.get("name") or "(all)",
                      "filename": filename, "line_number": line_number,
                      "where": f"{filename}:{line_number}" if filename else "", "line": description.get("line") or "",
                      "count": count,
                      "self_count": max(count - sum(int(c.get("count") or 0) for c in children.values()), 0)})
        for identifier, child in sorted(children.items(), key=lambda item: -int(item[1].get("count") or 0)):
            stack.append((child, f"{path}/{identifier}", path))
    if len(nodes) <= max_nodes:
        return nodes
    kept = {n["id"] for n in sorted(nodes, key=lambda n: -n["count"])[:max_nodes]}
    return [n for n in nodes if n["id"] in kept and (n["parent"] is None or n["parent"] in kept)]


def hottest(nodes: list[dict], limit: int = HOTTEST_SHOWN) -> list[dict]:
    """Frames by their own samples, most first: where the time went."""
    return sorted((n for n in nodes if n["self_count"] > 0), key=lambda n: (-n["self_count"], n["id"]))[:limit]


def icicle_figure(nodes: list[dict], title: str) -> dict:
    """The frames as a Plotly icicle (callers above callees, width by samples)."""
    layout = {"title": {"text": title}, "margin": {"t": 40, "l": 0, "r": 0, "b": 0}}
    if len(nodes) <= 1:
        return {"data": [], "layout": layout}
    labels = [plot_text(f"{n['function']} {n['where']}".strip()) for n in nodes]
    return {"data": [{"type": "icicle", "ids": [n["id"] for n in nodes],
                      "parents": [n["parent"] or "" for n in nodes], "labels": labels,
                      "values": [n["count"] for n in nodes], "branchvalues": "total",
                      "tiling": {"orientation": "v", "flip": "y"},
                      "hovertemplate": "%{label}<br>%{value} samples<extra></extra>"}], "layout": layout}

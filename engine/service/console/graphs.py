"""Where a run is in its workflow's graph, as the run page draws it.

The graph is LangGraph's own description of the workflow (`get_graph()`): its
nodes in the order a run meets them (from `__start__`, edges that lead back
left out, ties in the order the graph declares its nodes), one below the
other, with each edge an arrow: to the next node straight down, further on an
arc on the right, back (a loop, a rejection) an arc on the left; a conditional
edge dashed. A workflow given as `build` is built once per (workflow, version)
and closed again at once: only its description is kept.
"""

import heapq
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.app import App
from engine.runtime.steps import END, START, Step
from engine.settings import Config

if TYPE_CHECKING:
    from langchain_core.runnables.graph import Graph as Description

    from engine.runtime.workflow import Workflow

log = logging.getLogger(__name__)

ROW = 40  # px from one node's top to the next one's
BOX_WIDTH, BOX_HEIGHT = 190, 26
MARGIN = 12
_BEND, _BEND_PER_ROW, _BEND_MAX = 14, 9, 150


@dataclass(frozen=True)
class Box:
    """A node, placed."""

    name: str
    x: int
    y: int
    counted: bool  # a node of the workflow's own (not LangGraph's __start__ or __end__)

    width = BOX_WIDTH
    height = BOX_HEIGHT

    @property
    def middle(self) -> tuple[int, int]:
        return self.x + BOX_WIDTH // 2, self.y + BOX_HEIGHT // 2


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    path: str  # SVG path data
    conditional: bool
    back: bool


@dataclass(frozen=True)
class Drawing:
    boxes: list[Box]
    arrows: list[Arrow]
    width: int
    height: int

    @property
    def nodes(self) -> list[str]:
        """The workflow's own nodes in flow order: what "step N of M" counts."""
        return [box.name for box in self.boxes if box.counted]


@dataclass(frozen=True)
class Place:
    """Where a run is: its graph (None: `missing` says why), the nodes that finished
    at least once, and the nodes it is at now with their state (running, waiting...)."""

    drawing: Drawing | None
    missing: str | None
    finished: frozenset[str]
    current: Mapping[str, str]

    def state_of(self, node: str) -> str:
        if node in self.current:
            return f"current {self.current[node]}"
        return "finished" if node in self.finished else "ahead"

    @property
    def done(self) -> int:
        return len(self.finished.intersection(self.drawing.nodes)) if self.drawing else 0

    @property
    def total(self) -> int:
        return len(self.drawing.nodes) if self.drawing else 0


class Graphs:
    """The drawings of an App's workflows, each made the first time a run of it is shown."""

    def __init__(self, served: App, config: Config) -> None:
        self.served = served
        self.config = config
        self._drawn: dict[tuple[str, str], Drawing | None] = {}

    async def place(
        self, run: Mapping[str, Any], taken: Iterable[Step], finished: Iterable[str]
    ) -> Place:
        """Where `run` is: its graph, the nodes `finished`, and those of its steps
        `taken` that are not done (the ones it is at now)."""
        drawn, missing = await self.drawing(run["workflow"], run["graph_version"])
        current = {step.node: step.state for step in taken if step.state != "done"}
        return Place(drawn, missing, frozenset(finished), current)

    async def drawing(
        self, workflow: str, version: str | None
    ) -> tuple[Drawing | None, str | None]:
        """The drawing of `workflow` at `version` (None: the run has not started, so
        it runs the version served), or None and why there is none."""
        declared = self.served.by_name.get(workflow)
        if declared is None:
            return None, f"this server has no workflow {workflow!r}"
        if version is not None and version != declared.version:
            return None, (
                f"the run is on version {version} of {workflow}; this server has "
                f"version {declared.version}, whose graph may differ"
            )
        key = (workflow, declared.version)
        if key not in self._drawn:
            self._drawn[key] = await self._draw(declared)
        drawn = self._drawn[key]
        return drawn, None if drawn else "its graph could not be built (the server's log says why)"

    async def _draw(self, declared: "Workflow") -> Drawing | None:
        try:
            if declared.graph is not None:
                return drawing(declared.graph.get_graph())
            async with declared.opened(self.config) as opened:
                return drawing(opened.compiled.get_graph())
        except Exception:  # a product's builder: the page shows the run without its graph
            log.warning(
                "could not build a workflow's graph to draw it",
                extra={"action": "graph_not_drawn", "workflow": declared.name},
                exc_info=True,
            )
            return None


def drawing(description: "Description") -> Drawing:
    """LangGraph's description of a graph, laid out."""
    edges = [(edge.source, edge.target, edge.conditional) for edge in description.edges]
    order = flow_order(list(description.nodes), [(s, t) for s, t, _ in edges])
    row = {name: n for n, name in enumerate(order)}
    left_bend = right_bend = 0
    for source, target, _ in edges:
        bend = _bend(row[source], row[target])
        if row[target] <= row[source]:
            left_bend = max(left_bend, bend)
        elif row[target] > row[source] + 1:
            right_bend = max(right_bend, bend)
    x = MARGIN + left_bend
    boxes = [
        Box(name, x, MARGIN + n * ROW, name not in (START, END)) for n, name in enumerate(order)
    ]
    placed = {box.name: box for box in boxes}
    arrows = [
        Arrow(s, t, _path(placed[s], placed[t], row[s], row[t]), conditional, row[t] <= row[s])
        for s, t, conditional in edges
    ]
    width = x + BOX_WIDTH + right_bend + MARGIN
    return Drawing(boxes, arrows, width, 2 * MARGIN + len(order) * ROW - (ROW - BOX_HEIGHT))


def flow_order(nodes: list[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """`nodes` in the order a run meets them: a topological order of the edges that do
    not lead back (found depth-first from START), earlier-declared nodes first among
    those ready at once, END last."""
    following: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        following[source].append(target)
    seen: dict[str, bool] = {}  # node -> whether it is still being walked
    back: set[tuple[str, str]] = set()

    def walk(node: str) -> None:
        seen[node] = True
        for target in following[node]:
            if seen.get(target):
                back.add((node, target))
            elif target not in seen:
                walk(target)
        seen[node] = False

    for node in [START, *nodes]:
        if node in nodes and node not in seen:
            walk(node)
    rank = {name: (name == END, n) for n, name in enumerate(nodes)}
    waiting_for: dict[str, int] = dict.fromkeys(nodes, 0)
    forward = [(s, t) for s in nodes for t in following[s] if (s, t) not in back and s != t]
    for _, target in forward:
        waiting_for[target] += 1
    ready = [(rank[name], name) for name in nodes if waiting_for[name] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for target in following[name]:
            if (name, target) in back or target == name:
                continue
            waiting_for[target] -= 1
            if waiting_for[target] == 0:
                heapq.heappush(ready, (rank[target], target))
    return order


def _bend(source_row: int, target_row: int) -> int:
    return min(_BEND_MAX, _BEND + _BEND_PER_ROW * abs(target_row - source_row))


def _path(source: Box, target: Box, source_row: int, target_row: int) -> str:
    """Straight down to the next node; an arc on the right further on, on the left back."""
    (sx, sy), (tx, ty) = source.middle, target.middle
    if target_row == source_row + 1:
        return f"M {sx} {source.y + BOX_HEIGHT} L {tx} {target.y}"
    bend = _bend(source_row, target_row)
    if target_row > source_row:
        edge = source.x + BOX_WIDTH
        return f"M {edge} {sy} C {edge + bend} {sy}, {edge + bend} {ty}, {edge} {ty}"
    if target_row == source_row:  # a node that leads to itself
        sy, ty = sy - 6, ty + 6
    edge = source.x
    return f"M {edge} {sy} C {edge - bend} {sy}, {edge - bend} {ty}, {edge} {ty}"

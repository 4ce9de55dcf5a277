"""kedro-viz: the static site that ``kedro viz build`` writes shows every registered pipeline.

The end-to-end test builds the site in a copy of the project, serves ``build/`` on
127.0.0.1 and opens it in headless Chromium (its own ``--dump-dom`` / ``--screenshot``
command line, no browser-driver package). Node names come from the pipeline registry at
test time, so pipelines that are still being built are checked as they land.

Artefacts: one screenshot per pipeline under pytest's tmp path, copied to
``$SO8T_TEST_ARTIFACTS/viz/`` when that variable is set.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import inspect
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode

import pytest

from so8t_kedro.datasets import OptionalPartitionedDataset
from tests.helpers.chromium import chromium_binary, render
from tests.helpers.kedro_cli import kedro

# Kedro's layer convention (01_raw ... 08_reporting), in data-flow order.
KEDRO_LAYERS = ("raw", "intermediate", "primary", "feature", "model_input", "models",
                "model_output", "reporting")
# Pipelines whose datasets the test writes first, so that their previews have data.
PREVIEWED_PIPELINES = ("data_processing", "thinking_sft")


# ----------------------------------------------------------------------------- helpers


def pretty_name(name: str) -> str:
    """kedro-viz's "Pretty name" label: last namespace segment, ``_`` -> space, Title Case."""
    short = name.rsplit(".", 1)[-1]
    words = short.replace("-", " ").replace("_", " ").replace(":", ": ").strip()
    return re.sub(r"(^|\s)\S", lambda m: m.group(0).upper(), words)


def dataset_names(pipeline) -> set[str]:
    """Datasets kedro-viz draws for a pipeline: parameters hidden, transcoding merged."""
    return {
        name.split("@", 1)[0]
        for name in pipeline.datasets()
        if name != "parameters" and not name.startswith("params:")
    }


class FlowchartNodes(HTMLParser):
    """Collects the flowchart's node ``<g>`` elements: full name -> (type, shown label).

    kedro-viz draws every node as ``<g class="pipeline-node pipeline-node--<type>"
    data-node-fullname="<name>">`` inside the flowchart SVG, with its label in
    ``<text class="pipeline-node__text">``. The sidebar's node list uses other classes
    (``pipeline-node-icon``, ``node-list-row``), so it cannot satisfy the check.
    """

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, dict[str, str]] = {}
        self._current: str | None = None
        self._in_label = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if tag == "g" and "pipeline-node" in classes and "data-node-fullname" in attributes:
            self._current = attributes["data-node-fullname"] or ""
            self.nodes[self._current] = {"type": attributes.get("data-node-type") or "",
                                         "label": ""}
        elif tag == "text" and "pipeline-node__text" in classes and self._current is not None:
            self._in_label = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "text":
            self._in_label = False
        elif tag == "g":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._in_label and self._current is not None:
            self.nodes[self._current]["label"] += data


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@pytest.fixture
def serve_directory() -> Iterator:
    """Call with a folder: serves it on 127.0.0.1 at a free port, returns the base URL."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def serve(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def check_flowchart(
    chromium: str, base_url: str, name: str, pipeline, shots: Path, tmp_path: Path
) -> bool:
    """Open one pipeline's flowchart; assert it draws exactly the pipeline's nodes."""
    if not pipeline.nodes:
        return False  # an empty placeholder: nothing to draw (its selector entry is checked)
    # `expandAllPipelines` opens namespaced (modular) pipelines, which kedro-viz otherwise
    # draws collapsed as one node; `pid` selects the pipeline (default: `__default__`).
    query = {"expandAllPipelines": "true"}
    if name != "__default__":
        query["pid"] = name
    parser = FlowchartNodes()
    parser.feed(render(chromium, f"{base_url}?{urlencode(query)}", shots / f"{name}.png",
                       tmp_path / f"chromium-profile-{name}"))
    drawn = parser.nodes

    expected_tasks = {node.name for node in pipeline.nodes}
    drawn_tasks = {n for n, info in drawn.items() if info["type"] == "task"}
    assert drawn_tasks == expected_tasks, (
        f"{name}: missing {sorted(expected_tasks - drawn_tasks)}, "
        f"unexpected {sorted(drawn_tasks - expected_tasks)}"
    )
    drawn_data = {n for n, info in drawn.items() if info["type"] == "data"}
    expected_data = dataset_names(pipeline)
    assert drawn_data == expected_data, (
        f"{name}: missing datasets {sorted(expected_data - drawn_data)}, "
        f"unexpected {sorted(drawn_data - expected_data)}"
    )
    # The label is the node name, or its pretty form when the "Pretty name" setting is on
    # (off by default in kedro-viz 12; the fresh profile has no stored setting).
    for node_name in expected_tasks:
        label = drawn[node_name]["label"].strip()
        allowed = {node_name, node_name.rsplit(".", 1)[-1], pretty_name(node_name)}
        assert label in allowed, f"{name}: node {node_name!r} is labelled {label!r}"
    assert (shots / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return True


# ------------------------------------------------------------------------------- tests


def test_optional_partitioned_dataset_previews_its_partitions(tmp_path: Path):
    """kedro-viz shows the raw folder's file list (JSONPreview) without reading the files."""
    (tmp_path / "four_class_a.jsonl").write_bytes(b"{}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/four_class_b.jsonl").write_bytes(b"{}\n{}\n")
    dataset = OptionalPartitionedDataset(path=str(tmp_path), dataset="text.TextDataset")

    preview = json.loads(dataset.preview(max_partitions=1))
    assert preview["n_partitions"] == 2
    assert preview["total_bytes"] == 9
    assert preview["partitions"] == [{"id": "four_class_a.jsonl", "size_bytes": 3}]
    # kedro-viz picks the renderer from the return annotation's name, read like this
    annotation = inspect.signature(dataset.preview).return_annotation
    assert getattr(annotation, "__name__", str(annotation)) == "JSONPreview"
    missing = OptionalPartitionedDataset(path=str(tmp_path / "absent"), dataset="text.TextDataset")
    assert json.loads(missing.preview())["partitions"] == []


@pytest.mark.slow
def test_viz_build_renders_every_registered_pipeline(
    kedro_project: Path, tmp_path: Path, serve_directory
):
    chromium = chromium_binary()  # fail fast, before the build, when it is missing
    if importlib.util.find_spec("kedro_viz") is None:
        pytest.fail("kedro-viz is not installed: pip install -e '.[test]'")
    from kedro.framework.project import pipelines as registry
    from kedro.framework.session import KedroSession

    registered = {name: registry[name] for name in sorted(registry)}
    assert "__default__" in registered
    for name, pipeline in registered.items():
        for node in pipeline.nodes:
            # explicit, identifier-like names: `kedro run --nodes=...` and readable in viz
            assert re.fullmatch(r"[A-Za-z_][\w.]*", node.name), (
                f"pipeline {name!r} has a node without an explicit name=: {node.name!r}"
            )

    # Data for the previews: tables (JSONL), an image (matplotlib), JSON reports.
    with KedroSession.create(project_path=kedro_project) as session:
        session.run(pipeline_names=list(PREVIEWED_PIPELINES))

    build = kedro(kedro_project, "viz", "build", "--include-previews", timeout=600)
    log = build.stdout[-4000:] + build.stderr[-4000:]
    # `kedro viz build` exits 0 even when it fails; it prints "Success!" only on success.
    assert build.returncode == 0 and "Success!" in build.stdout, log
    site = kedro_project / "build"
    api = site / "api"
    main = json.loads((api / "main").read_text(encoding="utf-8"))

    # All registered pipelines, empty placeholders included, are in the pipeline selector.
    assert {p["id"] for p in main["pipelines"]} == set(registered)
    for name in registered:
        assert (api / "pipelines" / name).is_file(), f"no build/api/pipelines/{name}"

    # Every persisted dataset sits on a Kedro-convention layer, in data-flow order.
    data_nodes = {n["name"]: n for n in main["nodes"] if n["type"] == "data"}
    unlayered = sorted(
        name for name, n in data_nodes.items()
        if not (n.get("dataset_type") or "").endswith("MemoryDataset") and not n.get("layer")
    )
    assert not unlayered, f"catalog datasets without metadata.kedro-viz.layer: {unlayered}"
    assert set(main["layers"]) <= set(KEDRO_LAYERS), main["layers"]
    # kedro-viz orders its layer bands by data flow; a dataset on too early a layer shows
    # up as bands out of the convention's order.
    assert main["layers"] == [layer for layer in KEDRO_LAYERS if layer in main["layers"]], (
        f"kedro-viz orders the layers {main['layers']}, against the convention {KEDRO_LAYERS}"
    )

    # Datasets the run wrote or read preview in viz (those whose type has preview()).
    written = set().union(*(dataset_names(registered[p]) for p in PREVIEWED_PIPELINES))
    preview_types = {}
    for name in sorted(written):
        meta = json.loads((api / "nodes" / data_nodes[name]["id"]).read_text(encoding="utf-8"))
        if meta.get("preview_type"):
            assert meta["preview"] is not None, f"{name!r} has {meta['preview_type']} but no data"
            preview_types[name] = meta["preview_type"]
    assert {"TablePreview", "ImagePreview", "JSONPreview"} <= set(preview_types.values()), (
        preview_types
    )

    # The flowchart of every pipeline, `__default__` being the page's default view.
    base_url = serve_directory(site)
    shots = tmp_path / "viz-screenshots"
    shots.mkdir()
    try:
        checked = [name for name, pipeline in registered.items()
                   if check_flowchart(chromium, base_url, name, pipeline, shots, tmp_path)]
    finally:
        artefacts = os.environ.get("SO8T_TEST_ARTIFACTS")
        if artefacts:  # screenshots are kept for a failing run too
            shutil.copytree(shots, Path(artefacts) / "viz", dirs_exist_ok=True)
    assert "__default__" in checked


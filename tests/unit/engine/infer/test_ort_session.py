"""ONNX Runtime's optimised graph of an exported file, kept per CPU: reused, rebuilt when
damaged, built once by concurrent first sessions, never left half-written."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from isaseg_cli.engine.infer import ort_session
from isaseg_cli.engine.infer.backends import open_exported
from isaseg_cli.engine.infer.ort_session import onnxruntime_session

pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("damage", ["graph", "weights"])
def test_the_optimised_graph_is_kept_reused_and_rebuilt_when_damaged(
    damage, tiny_onnx, tmp_path
) -> None:
    images = np.random.default_rng(0).standard_normal((1, 3, 45, 61)).astype(np.float32)
    reference = open_exported(tiny_onnx["path"]).run(images)
    kept_dir = tmp_path / "optimized"
    first = open_exported(tiny_onnx["path"], optimized_dir=kept_dir)
    [kept] = kept_dir.glob("*.onnx")
    data = kept.with_suffix(".data")  # the weights, mapped into memory on load
    assert _weights_outside(kept, data)
    again = open_exported(tiny_onnx["path"], optimized_dir=kept_dir)
    assert again.entry == first.entry and again.classes == first.classes
    assert np.allclose(again.run(images), reference, atol=1e-5)
    if damage == "graph":
        kept.write_bytes(b"damaged")
    else:
        data.unlink()
    rebuilt = open_exported(tiny_onnx["path"], optimized_dir=kept_dir)
    assert np.allclose(rebuilt.run(images), reference, atol=1e-5)
    assert sorted(p.suffix for p in kept_dir.iterdir()) == [".data", ".lock", ".onnx"]
    assert kept.stat().st_size > 1000 and _weights_outside(kept, data)


def _weights_outside(kept: Path, data: Path) -> bool:
    """Every initializer of 1 KiB or more of the kept graph is stored in ``data``."""
    import onnx

    graph = onnx.load(str(kept), load_external_data=False).graph
    inside = [t for t in graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    largest = max((len(t.raw_data) for t in inside), default=0)
    return largest < 1024 and data.stat().st_size > 100 * sum(len(t.raw_data) for t in inside)


def test_concurrent_first_sessions_build_the_kept_graph_once(
    tiny_onnx, tmp_path, monkeypatch
) -> None:
    """The others wait on the lock and load what the first one kept."""
    builds = []
    build = ort_session._new_session

    def counted(*args):
        builds.append(args[3])  # where the graph is kept
        return build(*args)

    monkeypatch.setattr(ort_session, "_new_session", counted)
    kept_dir = tmp_path / "optimized"
    stages: list[str] = []
    options = {"optimized_dir": kept_dir, "on_stage": stages.append}
    with ThreadPoolExecutor(3) as pool:
        sessions = list(
            pool.map(lambda _: onnxruntime_session(tiny_onnx["path"], **options), range(3))
        )
    assert len(builds) == 1 and builds[0] is not None
    assert sorted(stages) == ["optimize", "wait", "wait"]  # the others said they waited
    images = np.random.default_rng(0).standard_normal((1, 3, 40, 40)).astype(np.float32)
    outputs = [s.run(None, {s.get_inputs()[0].name: images})[0] for s in sessions]
    assert all(np.allclose(o, outputs[0], atol=1e-5) for o in outputs)


def test_an_interrupted_build_leaves_no_partial_kept_graph(
    tiny_onnx, tmp_path, monkeypatch
) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession

    def interrupted_once_written(model, options, **kwargs):
        built = session(model, options, **kwargs)
        if options.optimized_model_filepath.endswith(".tmp"):  # Ctrl-C just after ORT wrote it
            assert Path(options.optimized_model_filepath).is_file()
            raise KeyboardInterrupt
        return built

    monkeypatch.setattr(onnxruntime, "InferenceSession", interrupted_once_written)
    kept_dir = tmp_path / "optimized"
    with pytest.raises(KeyboardInterrupt):
        onnxruntime_session(tiny_onnx["path"], optimized_dir=kept_dir)
    assert [p.suffix for p in kept_dir.iterdir()] == [".lock"]

"""Live loss/LR plot, the plot of a finished log, and the pruning widget's state, without a browser."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

from facesynth.errors import ConfigError
from facesynth.extract import FaceSet, extract_faces
from facesynth.notebook import LivePlot, PruneWidget, plot_training
from facesynth.notebook.live import moving_average
from facesynth.swap import SwapTrainer, prune, rank_faces


@pytest.fixture(scope="module")
def facesets(samples, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("live")
    a = extract_faces(samples.talking_head, root / "A", fps=5, size=64, detector="dlib", progress=False)
    b = extract_faces(samples.portraits, root / "B", size=64, detector="dlib", progress=False)
    return {"A": a.root, "B": b.root}


@pytest.fixture
def faces_a(facesets, tmp_path) -> FaceSet:
    shutil.copytree(facesets["A"], tmp_path / "A")
    fs = FaceSet.open(tmp_path / "A")
    fs.update_scores({f.id: {"loss": f.id / 100} for f in fs})      # face i has loss i/100: higher id = worse
    return FaceSet.open(tmp_path / "A")


def _markers(fig: Figure) -> list[float]:
    """x positions of the data-change markers (dashed vertical lines) on the loss axes."""
    ax = fig.axes[0]
    return [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == "--"]


def _write_log(path: Path, n: int = 400, event_at: int = 200) -> None:
    rng = np.random.default_rng(0)
    with open(path / "log.jsonl", "w") as f:
        for i in range(1, n + 1):
            r = {"iteration": i, "loss_a": 0.3 / np.sqrt(i) * (1 + 0.3 * rng.standard_normal() ** 2),
                 "loss_b": 0.2 / np.sqrt(i) * (1 + 0.3 * rng.standard_normal() ** 2), "lr": 5e-5 * min(1, i / 50)}
            if i == event_at:
                r |= {"event": "data_changed", "faces_a": 18, "faces_b": 2, "faces_a_before": 20, "faces_b_before": 2}
            f.write(json.dumps(r) + "\n")


@pytest.mark.slow
def test_live_plot_headless_writes_png_and_marks_the_data_change(facesets, tmp_path):
    for name in ("A", "B"):
        shutil.copytree(facesets[name], tmp_path / name)
    trainer = SwapTrainer("quick", tmp_path / "A", tmp_path / "B", tmp_path / "model", device="cpu", progress=False)
    png = tmp_path / "plots" / "loss.png"
    live = LivePlot(png, every=4, seconds=0, display=False)
    trainer.train(8, callbacks=[live])
    assert png.stat().st_size > 10_000
    assert live.redraws >= 3 and len(live.records) == 8 and _markers(live.figure) == []
    assert len(prune(tmp_path / "A", worst=0.1)) == 2
    trainer.reload_faces()
    trainer.train(12, callbacks=[live])
    assert [(e["iteration"], e["event"]) for e in live.events] == [(9, "data_changed")]
    assert _markers(live.figure) == [9]
    assert png.stat().st_mtime >= (tmp_path / "model" / "log.jsonl").stat().st_mtime - 1


@pytest.mark.slow
def test_live_plot_in_a_notebook_shows_one_figure_per_train_call_and_updates_it(monkeypatch):
    import IPython.display

    shown = []

    class Handle:
        def __init__(self):
            self.updates = 0

        def update(self, obj):
            assert isinstance(obj, IPython.display.Image)
            self.updates += 1

    def display(obj, display_id=False):
        assert display_id is True and isinstance(obj, IPython.display.Image)
        shown.append(Handle())
        return shown[-1]

    monkeypatch.setattr(IPython.display, "display", display)

    class FakeTrainer:
        log_path = Path("/nonexistent/log.jsonl")
        workdir = Path("/nonexistent")

    live = LivePlot(display=True, every=2, seconds=0)
    live.on_train_begin(FakeTrainer())
    for i in range(1, 7):
        live.on_log(FakeTrainer(), {"iteration": i, "loss_a": 1 / i, "loss_b": 2 / i, "lr": 1e-4})
    live.on_train_end(FakeTrainer())
    live.on_train_begin(FakeTrainer())
    assert len(shown) == 2 and shown[0].updates == 4          # begin shows; records 2, 4, 6 and the end update


def test_live_plot_throttles_redraws_but_draws_a_data_change_at_once(tmp_path):
    class FakeTrainer:
        log_path = tmp_path / "log.jsonl"
        workdir = tmp_path

    live = LivePlot(tmp_path / "loss.png", every=1, seconds=1e9, display=False)
    live.on_train_begin(FakeTrainer())
    for i in range(1, 31):
        event = {"event": "data_changed", "faces_a": 9, "faces_a_before": 10} if i == 20 else {}
        live.on_log(FakeTrainer(), {"iteration": i, "loss_a": 1 / i, "loss_b": 2 / i, "lr": 1e-4, **event})
    assert live.redraws == 2 and _markers(live.figure) == [20]        # at the beginning and at the event
    live.on_train_end(FakeTrainer())
    assert live.redraws == 3 and (tmp_path / "loss.png").is_file()


def test_plot_training_reads_a_finished_log(tmp_path):
    _write_log(tmp_path)
    fig = plot_training(tmp_path, path=tmp_path / "out" / "loss.png", smooth=20)
    assert (tmp_path / "out" / "loss.png").stat().st_size > 10_000
    assert _markers(fig) == [200]
    ax_loss, ax_lr = fig.axes
    assert ax_loss.get_yscale() == "log"
    smooth_a, raw_a = ax_loss.lines[0].get_ydata(), ax_loss.lines[1].get_ydata()
    assert len(smooth_a) == len(raw_a) == 400
    assert np.abs(np.diff(smooth_a[100:])).mean() < 0.2 * np.abs(np.diff(raw_a[100:])).mean()
    assert ax_lr.lines[0].get_ydata().max() == pytest.approx(5e-5)
    assert "A 20→18 faces" in " ".join(t.get_text() for t in ax_loss.texts)


def test_plot_training_accepts_the_log_file_itself(tmp_path):
    _write_log(tmp_path, n=30, event_at=0)
    fig = plot_training(tmp_path / "log.jsonl")
    assert len(fig.axes) == 2 and _markers(fig) == []


def test_plot_training_without_a_log_says_so(tmp_path):
    with pytest.raises(ConfigError, match="no training log"):
        plot_training(tmp_path)


def test_moving_average_is_a_trailing_mean():
    np.testing.assert_allclose(moving_average(np.array([1.0, 2, 3, 4, 5]), 2), [1, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(moving_average(np.array([3.0, 1.0]), 1), [3, 1])


def test_prune_widget_shows_worst_ranked_first_with_excluded_preselected(faces_a):
    faces_a.exclude([0])
    w = PruneWidget(faces_a, by=("loss",), max_faces=6)
    assert w.shown == [f for f, _ in rank_faces(faces_a, by=("loss",), excluded=True)][:6] == [19, 18, 17, 16, 15, 14]
    w = PruneWidget(faces_a)
    assert w.selected == {0} and w.pending() == ([], [])


def test_prune_widget_selection_becomes_exclude_and_include(faces_a):
    faces_a.exclude([0])
    w = PruneWidget(faces_a.root)
    assert w.toggle(19) is True and w.toggle(18) is True and w.toggle(18) is False
    w.mark([0], excluded=False)
    assert w.pending() == ([19], [0])
    assert w.apply() == ([19], [0])
    assert sorted(f.id for f in FaceSet.open(faces_a.root) if f.excluded) == [19]
    assert w.pending() == ([], [])


def test_prune_widget_apply_keeps_scores_written_since(faces_a):
    w = PruneWidget(faces_a.root)
    FaceSet.open(faces_a.root).update_scores({5: {"loss": 9.0}})        # e.g. a trainer's checkpoint meanwhile
    w.toggle(19)
    w.apply()
    again = FaceSet.open(faces_a.root)
    assert again.get(5).scores["loss"] == 9.0 and again.get(19).excluded


def test_prune_widget_refuses_to_exclude_every_face(faces_a):
    w = PruneWidget(faces_a.root)
    w.mark(w.shown)
    with pytest.raises(ConfigError, match="every face"):
        w.apply()
    assert not any(f.excluded for f in FaceSet.open(faces_a.root))


def test_prune_widget_clicks_and_apply_button(faces_a):
    pytest.importorskip("ipywidgets")
    w = PruneWidget(faces_a.root, by=("loss",), max_faces=8, cols=4)
    grid = w.widget.children[1]
    assert len(grid.children) == 8
    toggle = grid.children[0].children[2]              # image, caption, button of the worst face (19)
    toggle.value = True
    assert w.selected == {19} and toggle.description == "excluded"
    assert "#19" in grid.children[0].children[1].value
    w.mark([18])
    assert grid.children[1].children[2].value is True
    apply_button = w.widget.children[2].children[0]
    apply_button.click()
    assert sorted(f.id for f in FaceSet.open(faces_a.root) if f.excluded) == [18, 19]
    assert "excluded 2" in w.widget.children[2].children[1].value

"""The paper figures' building blocks on small logs and folders (notebook 04's end-to-end run is in
test_notebooks.py)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from facesynth.errors import ConfigError
from facesynth.figures import (STUDY_TABLE1, fig_loss, fig_lr, loss_windows, read_results, save_results,
                               table_swap_loss, write_index, write_table)


def _swap_run(workdir, iterations=400, prune_at=200):
    """A swap workdir as SwapTrainer leaves it: config.json and a log.jsonl with a data_changed event."""
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({"config": {"preset_name": "quick", "l1_weight": 1.0,
                                                                "dssim_weight": 1.0, "mask_type": "extended",
                                                                "log_every": 1}}))
    rng = np.random.default_rng(0)
    with open(workdir / "log.jsonl", "w") as f:
        for it in range(1, iterations + 1):
            record = {"iteration": it, "loss_a": 0.1 / it ** 0.3 + rng.uniform(0, 1e-3), "loss_b": 0.05 / it ** 0.3,
                      "lr": 1e-4 if it <= 300 else 1e-5, "time": 1000.0 + it * 0.1}
            if it == prune_at + 1:
                record |= {"event": "data_changed", "faces_a": 90, "faces_a_before": 100}
            f.write(json.dumps(record) + "\n")
    return workdir


def test_loss_windows_average_each_quarter_of_the_run():
    records = [{"iteration": i, "loss_a": float(i), "loss_b": 2.0 * i} for i in range(1, 401)]
    windows = loss_windows(records)
    assert [w["until"] for w in windows] == [100, 200, 300, 400] and windows[0]["from"] == 1
    assert windows[0]["loss_a"] == pytest.approx(50.5) and windows[3]["loss_b"] == pytest.approx(2 * 350.5)
    with pytest.raises(ConfigError, match="loss_a"):
        loss_windows([{"iteration": 1, "lr": 0.1}])


def test_table1_sits_beside_the_study_and_says_the_run_is_shorter(tmp_path):
    run = _swap_run(tmp_path / "model")
    md, csv_path = table_swap_loss(run, tmp_path / "t1")
    text = md.read_text()
    assert "0.0312953" in text and "0.0146704" in text                   # the study's values, in full
    assert "quarters" in text and "Faces were pruned at iteration 201" in text
    assert "L1 + DSSIM" in text and "extended mask" in text               # the loss that was trained
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["iteration"]) for r in rows] == [100, 200, 300, 400]
    assert [float(r["loss A (study)"]) for r in rows] == list(STUDY_TABLE1["loss_a"])
    losses = [float(r["loss A (ours)"]) for r in rows]
    assert losses == sorted(losses, reverse=True)                          # the synthetic loss falls


def test_loss_and_lr_figures_are_written_as_png_and_pdf(tmp_path):
    run = _swap_run(tmp_path / "model")
    for paths in (fig_loss(run, tmp_path / "fig07"), fig_lr(run, tmp_path / "fig08")):
        png, pdf = paths
        assert pdf.read_bytes()[:5] == b"%PDF-"
        with Image.open(png) as im:
            assert im.size[0] > 500 and len(np.unique(np.asarray(im.convert("L")))) > 20
    with pytest.raises(ConfigError, match="train first"):
        fig_loss(tmp_path / "nothing", tmp_path / "x")


def test_results_records_merge_and_a_broken_one_is_named(tmp_path):
    save_results(tmp_path, a2b=tmp_path / "a.mp4", iterations=np.int64(3))
    save_results(tmp_path, label="x")
    assert read_results(tmp_path) == {"a2b": str(tmp_path / "a.mp4"), "iterations": 3, "label": "x"}
    assert read_results(tmp_path / "missing") == {}
    (tmp_path / "results.json").write_text("{broken")
    with pytest.raises(ConfigError, match="results.json: not a results file"):
        read_results(tmp_path)


def test_index_page_links_every_figure_and_table(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("fig07_loss", "fig12_generated"):
        Image.fromarray(np.full((20, 30, 3), 128, np.uint8)).save(figures / f"{name}.png")
    write_table(figures / "table1_swap_loss", ["a", "b"], [[1, 0.5], [2, None]], "Table 1: x", ["a note"])
    notebook = tmp_path / "notebooks" / "01_face_swap.html"
    notebook.parent.mkdir()
    notebook.write_text("<html></html>")
    page = write_index(tmp_path / "index.html", figures, [notebook], {"mode": "QUICK"}).read_text()
    assert 'src="figures/fig07_loss.png"' in page and 'src="figures/fig12_generated.png"' in page
    assert 'href="notebooks/01_face_swap.html"' in page and "<td>n/a</td>" in page and "a note" in page
    assert "QUICK" in page and "torch" in page


def test_figures_command_without_results_and_without_running_says_what_to_run(tmp_path, capsys):
    from facesynth.cli import main

    assert main(["figures", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--no-run"]) == 2
    err = capsys.readouterr().err
    assert "no results.json" in err and "01_face_swap.ipynb" in err

"""The command line as a whole: one module per technique, every notebook action has a command, errors name the
CLI's flags, a failed start leaves no empty workdir, outputs with a wrong extension are refused before any work,
warnings print one line, and train-stylegan trains, resumes from its workdir alone and exports a generator."""
from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from facesynth.cli import COMMANDS, build_parser, main
from facesynth.extract import extract_faces
from facesynth.training import read_log

NOTEBOOK_ACTIONS = {   # what notebooks 00-04 do → the command that does it from a shell
    "extract_faces": "extract", "SwapTrainer": "train-swap", "prune": "prune", "convert_video": "convert",
    "reenact": "reenact", "FOMMTrainer": "train-fomm", "talking_portrait": "talking-portrait",
    "lipsync": "lipsync", "StyleGANTrainer": "train-stylegan", "generate_images": "generate",
    "project_face": "project", "evaluate_swap": "evaluate", "paper_figures": "figures",
}


def test_every_notebook_action_has_a_command_with_help(capsys):
    sources = "".join(p.read_text() for p in Path(__file__).parents[1].glob("notebooks/*.ipynb"))
    for action, command in NOTEBOOK_ACTIONS.items():
        assert action in sources, action           # the notebooks still do it …
        assert command in COMMANDS, command        # … and a command does it too
    for command in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
        assert e.value.code == 0
        assert f"usage: facesynth {command}" in capsys.readouterr().out


def test_one_module_per_technique():
    import facesynth.cli as cli

    modules = {COMMANDS[c][1].__module__ for c in COMMANDS}
    assert {"facesynth.cli.swap", "facesynth.cli.reenact", "facesynth.cli.lipsync", "facesynth.cli.generate",
            "facesynth.cli.extract", "facesynth.cli.weights", "facesynth.cli.evaluate", "facesynth.cli.figures",
            "facesynth.cli.demo"} <= modules
    assert len(Path(cli.__file__).read_text().splitlines()) < 120
    assert all(len(Path(sys.modules[m].__file__).read_text().splitlines()) < 250 for m in modules)
    assert build_parser().prog == "facesynth"


@pytest.mark.parametrize("argv, words", [
    (["generate", "{tmp}/out.png", "--mode", "video"], ["--mode video", ".mp4", "'.png'"]),
    (["generate", "{tmp}/out.mp4"], ["--mode images", ".png", "'.mp4'"]),
    (["generate", "{tmp}/grid", "--mode", "mixing"], ["--mode mixing", "a folder"]),
    (["talking-portrait", "{tmp}/talk.png", "--portrait", "p.png", "--driving", "d.mp4"], [".mp4", "'.png'"]),
])
def test_a_wrong_output_extension_is_refused_before_any_work(tmp_path, capsys, argv, words):
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("facesynth: error: OUTPUT ")
    assert all(w in err for w in words), err
    assert list(tmp_path.iterdir()) == []


def test_train_swap_names_its_flags_and_leaves_no_empty_workdir(tmp_path, capsys):
    workdir = tmp_path / "model"
    assert main(["train-swap", "--workdir", str(workdir), "--faces-a", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--faces-b" in err and "faces_b" not in err and "--faces-a" not in err
    assert not workdir.exists()
    # a face-set path that is not a face set: the library's error, and the workdir it made is gone again
    assert main(["train-swap", "--workdir", str(workdir), "--faces-a", str(tmp_path / "nope"),
                 "--faces-b", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    assert not workdir.exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    assert main(["train-swap", "--workdir", str(existing), "--faces-a", "x", "--faces-b", "y"]) == 2
    assert existing.is_dir()                  # a folder that existed before is never removed


def test_train_stylegan_needs_faces_for_a_new_workdir(tmp_path, capsys):
    assert main(["train-stylegan", "--workdir", str(tmp_path / "sg")]) == 2
    err = capsys.readouterr().err
    assert "--faces" in err and "holds no model yet" in err
    assert not (tmp_path / "sg").exists()


@pytest.mark.slow
def test_warnings_print_one_line_without_source(tmp_path):
    code = ("import warnings, facesynth.cli as c\n"
            "from facesynth.swap.convert import ConvertWarning\n"
            "def run(args):\n"
            "    warnings.warn('no face in frame 3;\\n  frame kept', ConvertWarning, stacklevel=2)\n"
            "    return 0\n"
            "c.COMMANDS['samples'] = (c.COMMANDS['samples'][0], run)\n"
            "raise SystemExit(c.main(['samples']))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0
    assert r.stderr == "facesynth: warning (ConvertWarning): no face in frame 3; frame kept\n"


@pytest.fixture(scope="module")
def faces(samples, tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cli_faces")
    extract_faces(samples.talking_head, root / "A", fps=5, size=64, detector="dlib", progress=False)
    return root / "A"


@pytest.mark.slow
def test_train_stylegan_trains_resumes_from_the_workdir_alone_and_generates(faces, tmp_path, capsys):
    workdir = tmp_path / "sg"
    assert main(["train-stylegan", "--faces", str(faces), "--workdir", str(workdir), "--preset", "quick",
                 "--iterations", "3", "--batch-size", "4", "--device", "cpu", "--plot", str(tmp_path / "loss.png")]) == 0
    out = capsys.readouterr().out
    assert "new model" in out and "batch 4" in out and "training to iteration 3" in out
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["config"]["batch_size"] == 4 and Path(saved["faces"]) == faces.resolve()
    assert (tmp_path / "loss.png").stat().st_size > 1000
    # reopened with nothing but the workdir: the same settings, on to a new target
    assert main(["train-stylegan", "--workdir", str(workdir), "--iterations", "5", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "resuming at iteration 3" in out and "batch 4" in out
    assert [r["iteration"] for r in read_log(workdir)] == [1, 2, 3, 4, 5]
    assert main(["train-stylegan", "--workdir", str(workdir), "--iterations", "5"]) == 0
    assert "nothing to train" in capsys.readouterr().out
    grid = tmp_path / "grid.png"
    assert main(["generate", str(grid), "--pkl", str(workdir / "generator.pt"), "--seeds", "0-3"]) == 0
    from facesynth.media import read_image
    assert read_image(grid).shape == (64, 64, 3)         # 2x2 grid of 32 px faces


def test_a_missing_weights_path_is_called_a_missing_file(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "g.png"), "--pkl", "missing.pkl"]) == 2
    err = capsys.readouterr().err
    assert "missing.pkl: no such file" in err and "no official weights called" not in err
    assert main(["generate", str(tmp_path / "g.png"), "--pkl", "celebahq"]) == 2
    assert "no official weights called 'celebahq'" in capsys.readouterr().err


def test_library_errors_name_the_commands_flags(tmp_path, capsys, samples):
    assert main(["talking-portrait", str(tmp_path / "t.mp4"), "--portrait", str(samples.astronaut),
                 "--driving", str(samples.talking_head), "--max-frames", "0"]) == 2
    assert capsys.readouterr().err == "facesynth: error: --max-frames must be at least 1, got 0\n"
    assert main(["train-swap", "--workdir", str(tmp_path / "m"), "--faces-a", str(tmp_path),
                 "--faces-b", str(tmp_path), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size must be" in err and "batch_size" not in err and not (tmp_path / "m").exists()
    # a path that holds such a name is left alone
    from facesynth.cli import _name_flags
    assert _name_flags("/data/batch_size/x: batch_size bad", {"batch_size": "--batch-size"}) == \
        "/data/batch_size/x: --batch-size bad"


def test_lipsync_batch_size_defaults_agree_with_the_library():
    from facesynth.cli import lipsync as cli_lipsync
    from facesynth.lipsync.pipeline import DEFAULT_BATCH_SIZE

    assert cli_lipsync.DEFAULT_BATCH_SIZE == DEFAULT_BATCH_SIZE
    parser = build_parser()
    for command in (["lipsync", "out.mp4", "--face", "f.png", "--audio", "a.wav"],
                    ["talking-portrait", "out.mp4", "--portrait", "p.png", "--driving", "d.mp4"]):
        assert parser.parse_args(command).batch_size == DEFAULT_BATCH_SIZE


def test_compile_flag_reaches_the_library(monkeypatch, tmp_path):
    import facesynth.lipsync
    import facesynth.reenact

    seen = {}
    plan = types.SimpleNamespace(num_frames=3, fps=25.0)
    monkeypatch.setattr(facesynth.lipsync, "plan_lipsync", lambda *a, **k: plan)
    monkeypatch.setattr(facesynth.lipsync, "write_lipsync",
                        lambda *a, **k: seen.setdefault("lipsync", k["compile"]) and tmp_path / "out.mp4")
    monkeypatch.setattr(facesynth.reenact, "load_fomm", lambda *a, **k: None)

    def fake_reenact(*args, **kwargs):
        seen["reenact"] = kwargs["compile"]
        raise SystemExit(0)
    monkeypatch.setattr(facesynth.reenact, "reenact", fake_reenact)

    def fake_portrait(*args, **kwargs):
        seen["talking-portrait"] = kwargs["compile"]
        raise SystemExit(0)
    monkeypatch.setattr(facesynth.lipsync, "talking_portrait", fake_portrait)
    parser = build_parser()
    lipsync = ["lipsync", str(tmp_path / "out.mp4"), "--face", "f.png", "--audio", "a.wav", "--no-provenance"]
    reenact = ["reenact", str(tmp_path / "out.mp4"), "--source", "s.png", "--driving", "d.mp4"]
    portrait = ["talking-portrait", str(tmp_path / "out.mp4"), "--portrait", "p.png", "--driving", "d.mp4"]
    for command in (lipsync, reenact, portrait):
        assert parser.parse_args(command).compile is False
    for command in (reenact, portrait):
        with pytest.raises(SystemExit):
            main(command + ["--compile"])
    main(lipsync + ["--compile"])
    assert seen == {"reenact": True, "lipsync": True, "talking-portrait": True}


def test_half_precision_flags_name_the_library_precision(capsys):
    from facesynth.cli.lipsync import _precision

    parser = build_parser()
    for command in (["lipsync", "out.mp4", "--face", "f.png", "--audio", "a.wav"],
                    ["talking-portrait", "out.mp4", "--portrait", "p.png", "--driving", "d.mp4"]):
        assert [_precision(parser.parse_args(command + flag)) for flag in ([], ["--bf16"], ["--fp16"])] == \
            ["fp32", "bf16", "fp16"]
        with pytest.raises(SystemExit):                     # one half precision or the other
            parser.parse_args(command + ["--bf16", "--fp16"])
        assert "not allowed with argument" in capsys.readouterr().err
    reenact = ["reenact", "out.mp4", "--source", "s.png", "--driving", "d.mp4"]
    assert [parser.parse_args(reenact + (["--precision", p] if p else [])).precision
            for p in (None, "fp16", "bf16")] == ["auto", "fp16", "bf16"]

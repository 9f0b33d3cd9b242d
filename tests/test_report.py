import json
import os
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest

from brain_mri.errors import BrainMRIError
from brain_mri.report.build import build_report, compare, find_runs, main, read_run
from brain_mri.report.page import BestRun, gallery, gallery_summary, write_page
from brain_mri.runs.files import best_checkpoints, read_csv, read_json, write_csv, write_json

FIGURES = ("grid_3d.png", "curves_{}.png", "roc_{}.png", "confusion_{}.png")


def test_sweep_report_has_every_file_and_the_right_rows(small_sweep, capsys):
    main([str(small_sweep), "--resamples", "300"])
    out = small_sweep / "report"
    rows = read_csv(out / "runs.csv")
    assert sorted(r["run"] for r in rows) == ["0", "1", "2", "3"]
    assert {(r["lr"], r["batch_size"]) for r in rows} == {
        ("0.001", "8"),
        ("0.0001", "8"),
        ("0.001", "0"),
        ("0.0001", "0"),
    }
    finished = [r for r in rows if r["status"] == "completed"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["batch_size"] for r in failed] == ["0", "0"] and all("batch_size" in r["error"] for r in failed)
    assert rows[:2] == finished and float(finished[0]["val_loss_best"]) <= float(finished[1]["val_loss_best"])
    for row in finished:
        metrics = read_json(small_sweep / row["run"] / "metrics.json")
        assert float(row["val_loss_best"]) == pytest.approx(metrics["val/loss_best"])
        assert float(row["test/auroc"]) == pytest.approx(metrics["test/auroc"])
        assert int(row["epochs"]) == 1  # the sweep trains one epoch

    best = json.loads((out / "best.json").read_text())
    split = read_csv(small_sweep / best["run"] / "split.csv")
    assert best["run"] == finished[0]["run"] and best["test_images"] == sum(
        r["partition"] == "test" for r in split
    )
    for name in ("accuracy", "auroc", "sensitivity", "specificity", "f1", "cohen_kappa"):
        assert best[f"{name}/low"] <= best[f"{name}/high"]  # (a percentile interval may miss the estimate)
    assert best["auroc/estimate"] == pytest.approx(float(finished[0]["test/auroc"]), abs=1e-6)
    for figure in FIGURES:
        assert (out / figure.format(best["run"])).stat().st_size > 5000
    markdown = (out / "runs.md").read_text()
    assert "2 failed" in markdown and "bootstrap" in markdown and markdown.count("| failed |") == 2
    assert "failed" in capsys.readouterr().out


def finished_jobs(sweep):
    return [
        p.parent.name for p in sorted(sweep.glob("*/metrics.json")) if read_json(p)["status"] == "completed"
    ]


def test_runs_in_linked_folders_are_found_once(small_sweep, tmp_path):
    """A sweep assembled from links to the runs of other sweeps (a grid run in parts); a link loop ends."""
    assembled = tmp_path / "assembled"
    assembled.mkdir()
    parts = [f"part_{job}" for job in finished_jobs(small_sweep)]
    for part in parts:
        (assembled / part).symlink_to(small_sweep / part.removeprefix("part_"), target_is_directory=True)
    (assembled / "again").symlink_to(assembled, target_is_directory=True)
    assert [run.name for run in find_runs(assembled)] == parts
    assert [checkpoint.parent.parent.name for checkpoint in best_checkpoints(assembled)] == parts


def test_a_resumed_run_is_reported_with_the_settings_its_resumes_changed(small_sweep, tmp_path):
    """Its config files stay as written when it started; run_info.json records each resume. A run that
    did not set a swept value shows its config's."""
    job = finished_jobs(small_sweep)[0]
    for name in ("resumed", "as_trained"):
        shutil.copytree(small_sweep / job, tmp_path / name, ignore=shutil.ignore_patterns("*.ckpt"))
    info = read_json(tmp_path / "resumed" / "run_info.json")
    info["resumes"] = [
        {"overrides": [f"resume={tmp_path / 'resumed'}", f"callbacks.early_stopping.patience={n}"]}
        for n in (7, 9)
    ]
    write_json(tmp_path / "resumed" / "run_info.json", info)
    build_report(tmp_path, resamples=20)
    patience = {
        r["run"]: r["callbacks.early_stopping.patience"] for r in read_csv(tmp_path / "report" / "runs.csv")
    }
    assert patience == {"resumed": "9", "as_trained": "5"}


def test_an_unfinished_run_counts_its_epochs_from_epoch_0(trained_run, tmp_path):
    """As metrics.json does, also for a run started from another run's checkpoint (its log begins later)."""
    ignored = shutil.ignore_patterns("*.ckpt", "metrics.json")
    run = shutil.copytree(trained_run, tmp_path / "run", ignore=ignored)
    rows = read_csv(run / "csv" / "metrics.csv")
    started_later = [r for r in rows if r["epoch"] != "0" and not r["test/loss"]]  # its log holds epoch 1
    write_csv(run / "csv" / "metrics.csv", started_later, tuple(rows[0]))
    row = read_run(run, tmp_path)
    assert (row["status"], row["epochs"], row["best_epoch"]) == ("incomplete", 2, 1)


@pytest.mark.parametrize(
    ("file", "damage"),
    [("metrics.json", '{"status": "compl'), ("config.yaml", "a: ["), ("csv/metrics.csv", None)],
)
def test_a_damaged_run_file_is_named_in_one_message(trained_run, tmp_path, file, damage):
    run = shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.ckpt"))
    path = run / file
    text = path.read_text()
    # a log cut off mid-line and appended to: one row longer than its header
    path.write_text(damage if damage is not None else text[: len(text) // 2] + text)
    with pytest.raises(BrainMRIError, match=rf"{re.escape(str(path))} is damaged"):
        build_report(tmp_path)


def test_report_on_a_sweep_still_running(small_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    first, second = finished_jobs(small_sweep)
    shutil.copytree(small_sweep / first, sweep / "0")
    shutil.copytree(small_sweep / second, sweep / "1")
    (sweep / "1" / "metrics.json").unlink()  # job 1 has not finished yet
    report = build_report(sweep, resamples=100)
    running = next(r for r in report["rows"] if r["run"] == "1")
    assert running["status"] == "incomplete" and running["test/auroc"] is None
    epochs = read_csv(sweep / "1" / "csv" / "metrics.csv")
    assert running["val_loss_best"] == pytest.approx(
        min(float(e["val/loss"]) for e in epochs if e["val/loss"])
    )
    assert report["best"]["run"] == "0"


def test_report_on_one_run_folder(trained_run):
    report = build_report(trained_run, resamples=100)
    assert len(report["rows"]) == 1 and report["best"]["run"] == trained_run.name
    assert (trained_run / "report" / f"curves_{trained_run.name}.png").is_file()
    page = (trained_run / "report" / "index.html").read_text()
    assert f"{report['best']['test_images']} test images of run {trained_run.name}, " in page


def test_cross_validation_is_summarised_per_configuration(small_sweep, tmp_path):
    sweep = tmp_path / "cv"
    for fold, job in enumerate(
        finished_jobs(small_sweep)
    ):  # two finished jobs posing as two folds of one config
        shutil.copytree(small_sweep / job, sweep / str(fold))
        config = (sweep / str(fold) / "config.yaml").read_text()
        config = config.replace("num_folds: 0", "num_folds: 2").replace("fold: 0", f"fold: {fold}")
        config = config.replace("lr: 0.0001", "lr: 0.001")
        (sweep / str(fold) / "config.yaml").write_text(config)
    report = build_report(sweep, resamples=100)
    (summary,) = report["cross_validation"]
    losses = [r["val_loss_best"] for r in report["rows"]]
    assert summary["folds"] == 2 and summary["val_loss_best mean"] == pytest.approx(sum(losses) / 2)
    assert "Cross-validation" in (sweep / "report" / "runs.md").read_text()


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "No runs under" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope")])
    assert "nope is not a folder" in capsys.readouterr().err


def test_a_page_shows_the_gallery_the_run_drew_and_says_when_it_drew_none(trained_run, tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "run_info.json").write_text(json.dumps(read_json(run / "run_info.json") | {"data_root": "/gone"}))
    page = (build_report(run, resamples=50)["folder"] / "index.html").read_text()
    drawn = read_csv(run / "gallery.csv")
    assert drawn and page.count('<figure class="') == len(drawn)  # the report needs no data, no model
    (run / "gallery.csv").unlink()
    page = (build_report(run, resamples=50)["folder"] / "index.html").read_text()
    said = "the run drew no Grad-CAM maps of its test images (gallery_images=0"
    assert "No gallery: " in page and said in page and '<figure class="' not in page
    assert said in caplog.text  # and in the terminal


# Injected into a copy of the page: counts the images on it and those that did not load.
IMAGE_CHECK = """<script>addEventListener("load", () => {
  document.body.dataset.images = document.images.length;
  document.body.dataset.broken = [...document.images].filter(i => !i.complete || !i.naturalWidth).length;
});</script>"""


def browser() -> str:
    """Debian's chromium (.ci/run installs it); elsewhere the browser test is skipped, never in CI."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        message = "no chromium on PATH (apt-get install -y chromium)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    return found


def test_the_report_page_renders_offline_with_every_image_and_no_console_message(small_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    for job in finished_jobs(small_sweep):
        shutil.copytree(small_sweep / job, sweep / job)
    report = build_report(sweep, resamples=100)
    page = (report["folder"] / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and 'src="data:image/png;base64,' in page
    test_images = sum(r["partition"] == "test" for r in read_csv(sweep / "0" / "split.csv"))
    assert page.count('<figure class="') == test_images  # the gallery: every test image of the best run
    wrong = [
        r
        for r in read_csv(sweep / report["best"]["run"] / "predictions.csv")
        if r["predicted_class"] != r["class"]
    ]
    classes = re.findall(r'<figure class="(wrong|right)"', page)
    assert classes == ["wrong"] * len(wrong) + ["right"] * (test_images - len(wrong))  # mistakes first

    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", IMAGE_CHECK + "</body>"))
    shown = subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--log-level=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            checked.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    images = int(re.search(r'data-images="(\d+)"', shown.stdout).group(1))
    assert images == len(re.findall(r"<img ", page)) >= test_images + 4  # gallery and figures
    assert re.search(r'data-broken="(\d+)"', shown.stdout).group(1) == "0"
    assert "CONSOLE" not in shown.stderr, [line for line in shown.stderr.splitlines() if "CONSOLE" in line]


def test_a_missing_compare_folder_stops_before_the_report_is_written(small_sweep, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    shutil.copytree(small_sweep / finished_jobs(small_sweep)[0], sweep / "0")
    with pytest.raises(SystemExit) as stopped:
        main([str(sweep), "--compare", str(tmp_path / "absent")])
    assert stopped.value.code == 1 and "--compare" in capsys.readouterr().err
    assert not (sweep / "report").exists()


def posed_as(source, target, data, fingerprint=None, fold=None, val_loss=None):
    """A copy of a finished run (without checkpoints) that read the data set in a folder named ``data``
    (another fingerprint: other data); with ``fold``, fold ``fold`` of a 2-fold cross-validation at lr 1e-3
    that validated on every other image of the run's validation predictions."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.ckpt"))
    info = read_json(target / "run_info.json")
    info |= {"data_root": f"/elsewhere/{data}", "data_fingerprint": fingerprint or info["data_fingerprint"]}
    write_json(target / "run_info.json", info)
    if fold is not None:
        config = (target / "config.yaml").read_text().replace("num_folds: 0", "num_folds: 2")
        config = config.replace("fold: 0", f"fold: {fold}").replace("lr: 0.0001", "lr: 0.001")
        (target / "config.yaml").write_text(config)
        predicted = read_csv(target / "val_predictions.csv")
        write_csv(target / "val_predictions.csv", predicted[fold::2], tuple(predicted[0]))
    if val_loss is not None:
        write_json(target / "metrics.json", read_json(target / "metrics.json") | {"val/loss_best": val_loss})
    return target


OTHER_DATA = "f" * 64  # the fingerprint of a data set other than the runs' own


def test_runs_on_different_data_sets_are_ranked_separately(small_sweep, tmp_path, capsys):
    """A phantom run with the lowest loss is the best of its own data set, not of the real-data runs; the
    data column names the data root's folder, and a config group shows its option, never its contents."""
    first, second = (small_sweep / job for job in finished_jobs(small_sweep))
    posed_as(first, tmp_path / "real_a", "brain_tumor_dataset")
    posed_as(second, tmp_path / "real_b", "brain_tumor_dataset")
    phantom = posed_as(first, tmp_path / "phantom", "synthetic", OTHER_DATA, val_loss=1e-4)
    overrides = (phantom / ".hydra" / "overrides.yaml").read_text().splitlines()
    kept = [line for line in overrides if line not in ("- data=synthetic", "- trainer=cpu")]
    assert len(kept) == len(overrides) - 2  # both set by the command line, now left to their defaults
    (phantom / ".hydra" / "overrides.yaml").write_text("\n".join(kept) + "\n")

    main([str(tmp_path), "--resamples", "50"])
    said = capsys.readouterr().out
    assert said.count("used 2 different data sets") == 1 and "best run on synthetic: phantom" in said
    out = tmp_path / "report"
    rows = read_csv(out / "runs.csv")
    assert {r["run"]: r["data"] for r in rows} == {
        "real_a": "brain_tumor_dataset",
        "real_b": "brain_tumor_dataset",
        "phantom": "synthetic",
    }
    assert [r["run"] for r in rows][-1] == "phantom" and {r["trainer"] for r in rows} == {"cpu"}
    best = read_json(out / "best.json")
    assert best["run"] != "phantom" and best["data"] == "brain_tumor_dataset"
    (other,) = best["other_data_sets"]
    assert (other["run"], other["data"], other["data_fingerprint"]) == ("phantom", "synthetic", OTHER_DATA)
    markdown = (out / "runs.md").read_text()
    assert markdown.count("used 2 different data sets (brain_tumor_dataset, synthetic;") == 1
    assert (
        "# Runs on brain_tumor_dataset (2; 0 failed)" in markdown and "# Runs on synthetic (1; 0" in markdown
    )
    assert "{" not in markdown  # no config printed as a dict
    # trainer=cpu set for the real-data runs alone: a difference between data sets, not within one
    header = markdown.split("# Runs on brain_tumor_dataset")[1].split("\n| ")[1]
    assert "trainer" not in header and "weight_decay" in header and "weight_decay" in said
    page = (out / "index.html").read_text()
    assert page.count("used 2 different data sets") == 1 and "best run on synthetic (phantom)" in page
    assert (out / "grid_3d.png").is_file() and (out / "grid_3d_synthetic.png").is_file()


def test_cross_validations_and_comparisons_keep_data_sets_apart(small_sweep, tmp_path):
    first, second = (small_sweep / job for job in finished_jobs(small_sweep))
    mixed, real, phantom = tmp_path / "mixed", tmp_path / "real", tmp_path / "phantom"
    for fold, job in enumerate((first, second)):
        for folder in (mixed, real):
            posed_as(job, folder / "real" / str(fold), "brain_tumor_dataset", fold=fold)
        for folder in (mixed, phantom):  # the same configuration, the lower loss, on other data
            posed_as(job, folder / "synthetic" / str(fold), "synthetic", OTHER_DATA, fold=fold, val_loss=1e-4)
    validated = len(read_csv(first / "val_predictions.csv"))

    summary = build_report(mixed, resamples=50)["cross_validation"]
    assert [(e["data"], e["folds"], e["oof images"]) for e in summary] == [
        ("brain_tumor_dataset", 2, validated),
        ("synthetic", 2, validated),
    ]
    compared = compare(mixed, real, resamples=50)  # on the data set both hold, not the lower loss
    assert (compared["first_data"], compared["second_data"]) == ("brain_tumor_dataset",) * 2
    assert compared["estimate"] == 0.0 and compared["images"] == validated  # the same predictions
    assert compared["notes"] == [
        f"{mixed} holds cross-validations on 2 data sets; compared: those on brain_tumor_dataset"
    ]
    apart = compare(real, phantom, resamples=50)  # one data set each: compared, and said
    assert "made on different data (brain_tumor_dataset and synthetic" in apart["notes"][0]
    (phantom / "real").mkdir()  # a third data set on neither side: no common one to choose
    posed_as(first, phantom / "real" / "0", "brain_tumor_dataset", "0" * 64, fold=0)
    posed_as(second, phantom / "real" / "1", "brain_tumor_dataset", "0" * 64, fold=1)
    with pytest.raises(BrainMRIError, match="no cross-validation on the same data set"):
        compare(real, phantom, resamples=50)


def test_the_page_names_its_folder_without_the_absolute_path(tmp_path, monkeypatch):
    out = tmp_path / "outputs" / "grid" / "report"
    out.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert "<h1>Report: outputs/grid</h1>" in write_page(out, [], []).read_text()
    monkeypatch.chdir(out)  # not below the current folder: its name alone
    page = write_page(out, [], []).read_text()
    assert "<h1>Report: grid</h1>" in page and str(tmp_path) not in page


@pytest.mark.parametrize(
    ("shown", "total", "wrong", "said"),
    [
        (26, 26, 3, "26 test images of run 1, 3 misclassified (shown first)."),
        (1, 1, 0, "1 test image of run 1, none misclassified."),
        (64, 100, 1, "64 of the 100 test images of run 1, 1 misclassified (shown first)."),
    ],
)
def test_the_gallery_says_how_many_test_images_of_which_run(shown, total, wrong, said):
    assert gallery_summary("1", shown, total, wrong) == said


def test_names_from_folders_files_and_settings_reach_the_page_escaped(tmp_path):
    hostile = '"><svg onload=alert(5)>'
    out = tmp_path / f"sweep{hostile}" / "report"
    out.mkdir(parents=True)
    (out / f"curves_{hostile}.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a figure named after a run
    section = SimpleNamespace(
        title=hostile, text=hostile, rows=[{hostile: hostile}], columns=[hostile], level=1
    )
    page = write_page(out, [section], [], note=hostile).read_text()
    assert "<svg" not in page and page.count("&lt;svg onload=alert(5)&gt;") >= 7


def test_names_in_a_runs_gallery_and_in_markdown_are_shown_never_run(tmp_path):
    from brain_mri.report.tables import render_markdown

    hostile = '"><svg onload=alert(5)>'
    run = tmp_path / "run"
    (run / "gallery").mkdir(parents=True)
    (run / "gallery" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "report").mkdir()
    tested = {"class": hostile, "predicted_class": "no"}
    write_csv(run / "predictions.csv", [tested], tuple(tested))
    row = {"image": "gallery/0.png", "path": hostile, "class": hostile, "predicted_class": "no"}
    write_csv(run / "gallery.csv", [row], tuple(row))
    page = write_page(tmp_path / "report", [], [gallery(BestRun(hostile, run, hostile))]).read_text()
    assert "<svg" not in page and page.count("&lt;svg onload=alert(5)&gt;") >= 4
    section = SimpleNamespace(
        title=hostile, text=hostile, rows=[{hostile: hostile}], columns=[hostile], level=1
    )
    markdown = render_markdown([section], note=hostile)
    assert "<svg" not in markdown and markdown.count("&lt;svg onload=alert(5)&gt;") == 5
    write_csv(run / "gallery.csv", [row | {"image": "../../../etc/hostname"}], tuple(row))  # outside
    with pytest.raises(BrainMRIError, match=r"gallery\.csv is damaged: it names an image outside gallery/"):
        write_page(tmp_path / "report", [], [gallery(BestRun("1", run, None))])


def test_the_gallery_counts_the_runs_misclassified_test_images(trained_run, tmp_path):
    rows = read_csv(trained_run / "predictions.csv")
    wrong = sum(r["predicted_class"] != r["class"] for r in rows)
    out = tmp_path / "report"
    out.mkdir()
    page = write_page(out, [], [gallery(BestRun("1", trained_run, None))]).read_text()
    said = f"{wrong} misclassified (shown first)" if wrong else "none misclassified"
    assert f"test images of run 1, {said}." in page and page.count('class="wrong"') == wrong


def test_a_page_that_fails_to_write_leaves_the_last_page_whole_and_no_partial_file(tmp_path, monkeypatch):
    out = tmp_path / "report"
    out.mkdir()
    (out / "index.html").write_text("the last page")

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("brain_mri.atomic.os.replace", disk_full)
    with pytest.raises(BrainMRIError, match=r"The disk is full: .*index\.html cannot be written"):
        write_page(out, [], [])
    assert [p.name for p in out.iterdir()] == ["index.html"] and (
        out / "index.html"
    ).read_text() == "the last page"


def test_names_that_are_not_utf8_or_hold_markdown_are_drawn_and_written_as_text(tmp_path):
    from matplotlib.figure import Figure

    from brain_mri.report.figures import _save
    from brain_mri.report.tables import markdown_text

    figure = Figure()
    figure.add_subplot().set_title("caf\udce9_run")  # a Latin-1 folder name, as os.fsdecode gives it
    _save(figure, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes().startswith(b"\x89PNG")
    said = markdown_text("a|b\n# HACKED [x](javascript:alert(1)) `code`")
    assert said == "a\\|b # HACKED \\[x\\](javascript:alert(1)) \\`code\\`"


def test_a_damaged_gallery_of_the_best_run_stops_the_report_before_it_writes(trained_run, tmp_path):
    run = tmp_path / "sweep" / "run"
    shutil.copytree(trained_run, run)
    (run / "gallery" / "000.png").unlink()
    with pytest.raises(BrainMRIError, match=r"gallery\.csv names gallery/000\.png, which is not there"):
        build_report(tmp_path / "sweep", resamples=20)
    assert not (tmp_path / "sweep" / "report").exists() or not any((tmp_path / "sweep" / "report").iterdir())

"""Explanations measured against boxes (eval.py eval.boxes=): the boxes file's checks, boxes that follow
the brain crop, the pointing game and mass against known maps, and the measures in metrics.json. (Each
explanation method on the hand-set lesion detector: test_explain.py.)"""

import csv

import numpy as np
import pytest
import torch
from test_recipe import head_slice

from brain_mri.data.boxes import boxes_on_input, read_boxes
from brain_mri.data.folder import ImageFile
from brain_mri.data.preprocessing import brain_box
from brain_mri.data.split import read_split
from brain_mri.errors import BrainMRIError
from brain_mri.models import BrainMRIClassifier
from brain_mri.models.localisation import control_boxes, hidden, localisation, with_random_weights
from brain_mri.report.build import build_report
from brain_mri.runs.files import BOX_GALLERY_FIELDS, read_csv, read_json
from brain_mri.tasks.evaluate import evaluate
from brain_mri.training.gallery import shown_first
from helpers import compose_task


def write_boxes(path, rows, fields=("path", "x_center", "y_center", "width", "height")):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(fields)
        writer.writerows(rows)
    return path


def test_the_pointing_game_and_the_mass_in_the_box_of_known_maps():
    maps = np.zeros((3, 10, 10))
    maps[0, 2, 2] = 1.0  # peak inside the box (pixels 1-4 across and down)
    maps[1, 2, 6] = 1.0  # peak 1.5 pixels right of the box: a hit only with the tolerance
    maps[1, 2, 2] = 0.5
    boxes = np.array([[1, 1, 5, 5]] * 3, dtype=float)  # maps[2] is empty: no evidence, no hit
    strict, tolerant = localisation(maps, boxes, 0.0), localisation(maps, boxes, 2.0)
    assert strict["pointing_game"].tolist() == [1, 0, 0] and tolerant["pointing_game"].tolist() == [1, 1, 0]
    assert strict["mass_in_box"].tolist() == pytest.approx([1.0, 0.5 / 1.5, 0.0])
    assert strict["flat_mass_in_box"].tolist() == pytest.approx([0.16] * 3)  # 4 x 4 of 10 x 10 pixels
    assert strict["centre_pointing_game"].tolist() == [1, 1, 1]  # (5, 5) lies on the box's edge


@pytest.mark.parametrize(
    ("rows", "fields", "message"),
    [
        ([["a.png", 0.5, 0.5, 0.2]], ("path", "x_center", "y_center", "width"), "lacks the column(s) height"),
        (
            [["a.png", 0.95, 0.5, 0.2, 0.2]],
            None,
            "line 2 (a.png): the box (centre 0.95, 0.5, size 0.2 x 0.2)",
        ),
        ([["a.png", 50, 40, 10, 10]], None, "does not lie in [0, 1]: values are fractions"),
        ([["a.png", "x", 0.5, 0.2, 0.2]], None, "line 2 (a.png): a value is not a number"),
        (
            [["a.png", 0.5, 0.5, 0.2, 0.2], ["a.png", 0.2, 0.2, 0.1, 0.1]],
            None,
            "a.png has two boxes (lines 2 and 3)",
        ),
        ([["a.png", 0.5, 0.5, 0, 0.2]], None, "line 2 (a.png): the box has no area (size 0.0 x 0.2)"),
        ([["a.png", 0.5, 0.5]], None, "line 2 (a.png): it ends before width, height"),
        ([], None, "holds no boxes: only a header, or nothing"),
        ([["a.png"]], ("path", "x", "y"), "its header is path, x, y"),
    ],
)
def test_a_bad_boxes_file_is_one_message(tmp_path, rows, fields, message):
    path = write_boxes(tmp_path / "boxes.csv", rows, *([fields] if fields else []))
    with pytest.raises(BrainMRIError) as error:
        read_boxes(path)
    assert message in str(error.value)


def test_a_spreadsheets_boxes_file_is_read_and_one_not_in_utf8_is_one_message(tmp_path):
    """With a byte-order mark and CRLF, or spaces after the header's commas: read."""
    (tmp_path / "excel.csv").write_bytes(
        "\ufeffpath,x_center,y_center,width,height\r\na.png,0.5,0.5,0.2,0.2\r\n".encode()
    )
    assert read_boxes(tmp_path / "excel.csv") == {"a.png": pytest.approx((0.4, 0.4, 0.6, 0.6))}
    spaced = write_boxes(
        tmp_path / "spaced.csv",
        [["a.png", 0.5, 0.5, 0.2, 0.2]],
        ("path", " x_center", " y_center", " width", " height"),
    )
    assert read_boxes(spaced) == {"a.png": pytest.approx((0.4, 0.4, 0.6, 0.6))}  # "path, x_center, ..."
    (tmp_path / "latin.csv").write_bytes(
        "path,x_center,y_center,width,height\ntumeur_é.png,0.5,0.5,0.2,0.2\n".encode("latin-1")
    )
    with pytest.raises(BrainMRIError, match=r"latin\.csv is not UTF-8 text"):
        read_boxes(tmp_path / "latin.csv")


def test_boxes_follow_the_brain_crop_and_must_name_evaluated_images(tmp_path):
    image = head_slice(400, 300, (150, 60, 330, 260))
    image.save(tmp_path / "head.png")
    # the tumour: pixels 200-260 across, 100-160 down, as fractions of the whole 400 x 300 image
    boxes = read_boxes(write_boxes(tmp_path / "boxes.csv", [["head.png", 230 / 400, 130 / 300, 0.15, 0.2]]))
    files = [ImageFile("head.png", "yes", 1)]
    whole, has = boxes_on_input(boxes, files, tmp_path, 100, "none", tmp_path / "boxes.csv")
    assert has.tolist() == [True] and whole[0] == pytest.approx([50, 100 / 3, 65, 160 / 3])
    cropped, _ = boxes_on_input(boxes, files, tmp_path, 100, "brain", tmp_path / "boxes.csv")
    x0, y0, x1, y1 = brain_box(image)
    expected = [
        (200 - x0) / (x1 - x0),
        (100 - y0) / (y1 - y0),
        (260 - x0) / (x1 - x0),
        (160 - y0) / (y1 - y0),
    ]
    assert cropped[0] == pytest.approx(np.array(expected) * 100)
    # a box the crop cuts away (in the black margin left of the head) is no box on the model's input
    margin = read_boxes(write_boxes(tmp_path / "margin.csv", [["head.png", 0.05, 0.5, 0.05, 0.05]]))
    _, kept = boxes_on_input(margin, files, tmp_path, 100, "brain", tmp_path / "margin.csv")
    assert kept.tolist() == [False]
    with pytest.raises(
        BrainMRIError, match=r"none of its 1 paths is an evaluated image \(e\.g\. 'head\.png'"
    ):
        boxes_on_input(
            boxes, [ImageFile("other.png", "yes", 1)], tmp_path, 100, "none", tmp_path / "boxes.csv"
        )


def test_eval_measures_the_maps_against_the_boxes_with_intervals(trained_run, phantom_root, tmp_path):
    tested = [r["path"] for r in read_split(trained_run / "split.csv") if r["partition"] == "test"]
    whole = write_boxes(tmp_path / "whole.csv", [[path, 0.5, 0.5, 1.0, 1.0] for path in tested[1:]])
    out = tmp_path / "eval"
    evaluate(
        compose_task("eval", out, f"ckpt_path={trained_run}", f"eval.boxes={whole}", "eval.explain=grad_cam")
    )
    found = read_json(out / "metrics.json")["localisation"]
    assert found["images"] == len(tested) - 1 and found["images_without_a_box"] == 1
    assert found["method"] == "grad_cam on layer4" and found["tolerance_px"] == 2
    for name in ("centre_pointing_game", "flat_mass_in_box"):  # a box of the whole image holds them
        assert found[name] == {"estimate": 1.0, "low": 1.0, "high": 1.0}, name
    for name in (
        "pointing_game",
        "mass_in_box",
        "random_weights_pointing_game",
        "random_weights_mass_in_box",
    ):
        assert 0 <= found[name]["low"] <= found[name]["estimate"] <= found[name]["high"] <= 1, name
    assert len(read_csv(out / "predictions.csv")) == len(tested)


def test_a_hidden_box_takes_the_background_and_its_control_is_its_mirror_on_the_head():
    image = np.zeros((1, 20, 20), dtype=np.uint8)
    image[0, 2:18, 2:18] = 100  # the head
    image[0, 4:8, 4:8] = 250  # the tumour, top left
    box = np.array([[4.0, 4.0, 8.0, 8.0]])
    covered = hidden(image, box)
    assert (covered[0, 4:8, 4:8] == 0).all() and (covered[0, 8:] == image[0, 8:]).all()
    assert control_boxes(image, box).tolist() == [[12.0, 4.0, 16.0, 8.0]]  # the other hemisphere
    centred = np.array([[8.0, 4.0, 12.0, 8.0]])  # on the midline: its mirror overlaps it, so downwards
    assert control_boxes(image, centred).tolist() == [[8.0, 12.0, 12.0, 16.0]]


def test_eval_reports_how_the_true_class_falls_when_the_box_is_hidden(trained_run, tmp_path):
    tested = [r["path"] for r in read_split(trained_run / "split.csv") if r["partition"] == "test"]
    boxes = write_boxes(tmp_path / "boxes.csv", [[path, 0.4, 0.5, 0.2, 0.2] for path in tested])
    out = tmp_path / "eval"
    overrides = [
        f"ckpt_path={trained_run}",
        f"eval.boxes={boxes}",
        "eval.occlude=boxes",
        "eval.gallery_images=3",
    ]
    evaluate(compose_task("eval", out, *overrides))
    found = read_json(out / "metrics.json")["occlusion"]
    rows = read_csv(out / "predictions.csv")  # the same probabilities as testing gave, unoccluded
    tested_probability = np.mean([float(r[f"prob_{r['class']}"]) for r in rows])
    assert found["images"] == len(tested) and found["true_class_probability"] == pytest.approx(
        tested_probability, abs=1e-4
    )
    for name in ("drop_when_box_hidden", "drop_when_control_hidden", "box_minus_control"):
        assert -1 <= found[name]["low"] <= found[name]["estimate"] <= found[name]["high"] <= 1, name
    drawn = read_csv(out / "gallery.csv")  # eval.gallery_images=3 of them, misclassified first
    assert len(drawn) == 3 and list(drawn[0]) == list(BOX_GALLERY_FIELDS)
    assert all((out / row["image"]).is_file() for row in drawn)
    assert {row["peak"] for row in drawn} <= {"in box", "outside box", "none"}
    wrong = [row["predicted_class"] != row["class"] for row in drawn]
    assert wrong == sorted(wrong, reverse=True)
    with pytest.raises(BrainMRIError, match=r"eval\.occlude=boxes hides each image's box: give them"):
        evaluate(compose_task("eval", tmp_path / "again", f"ckpt_path={trained_run}", "eval.occlude=boxes"))


def test_the_report_shows_an_evaluations_box_figures_and_its_maps_with_the_boxes(trained_run, tmp_path):
    tested = [r["path"] for r in read_split(trained_run / "split.csv") if r["partition"] == "test"]
    boxes = write_boxes(tmp_path / "boxes.csv", [[path, 0.4, 0.5, 0.2, 0.2] for path in tested])
    evaluations = tmp_path / "evals"
    overrides = [
        f"ckpt_path={trained_run}",
        f"eval.boxes={boxes}",
        "eval.occlude=boxes",
        "eval.gallery_images=2",
    ]
    evaluate(compose_task("eval", evaluations / "boxed", *overrides))
    evaluate(compose_task("eval", evaluations / "plain", f"ckpt_path={trained_run}"))
    report = build_report(evaluations, resamples=20)
    assert report["rows"] == [] and [e["evaluation"] for e in report["evaluations"]] == ["boxed", "plain"]
    metrics = read_json(evaluations / "boxed" / "metrics.json")
    markdown = (evaluations / "report" / "runs.md").read_text()
    for part, name in [("localisation", "pointing_game"), ("occlusion", "box_minus_control")]:
        figure = metrics[part][name]
        assert f"{figure['estimate']:.3f} ({figure['low']:.3f}-{figure['high']:.3f})" in markdown, name
    assert "## Where the maps point" in markdown and "## Hiding the box" in markdown
    page = (evaluations / "report" / "index.html").read_text()
    assert "Maps against the boxes: boxed" in page and "Maps against the boxes: plain" not in page
    assert page.count("data:image/png") == 2 and "the box in green" in page  # the gallery's 2 images
    assert "No run completed" not in page and not (evaluations / "report" / "runs.csv").exists()


def test_the_sanity_checks_network_has_fresh_weights_the_same_for_one_seed(trained_run):
    model = BrainMRIClassifier.load_from_checkpoint(next((trained_run / "checkpoints").glob("epoch*.ckpt")))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    fresh, again = with_random_weights(model), with_random_weights(model)
    assert torch.equal(torch.rand(1), expected)  # the caller's random stream is left as it was
    assert all(torch.equal(model.state_dict()[name], before[name]) for name in before)  # the model untouched
    kernels = [name for name, value in before.items() if name.endswith("weight") and value.dim() >= 2]
    assert kernels and not any(torch.equal(fresh.state_dict()[name], before[name]) for name in kernels)
    assert all(torch.equal(fresh.state_dict()[name], again.state_dict()[name]) for name in before)


def test_a_gallery_shows_the_misclassified_first_then_each_class_in_turn():
    images = [
        (False, "yes", "yes/1.png"),
        (False, "yes", "yes/0.png"),
        (True, "yes", "yes/9.png"),
        (False, "no", "no/5.png"),
        (False, "no", "no/3.png"),
        (True, "no", "no/8.png"),
    ]
    assert [images[i][2] for i in shown_first(images)] == [
        "no/8.png",
        "yes/9.png",
        "no/3.png",
        "yes/0.png",
        "no/5.png",
        "yes/1.png",
    ]


def test_a_damaged_evaluation_is_one_message_before_the_report_writes_anything(trained_run, tmp_path):
    tested = [r["path"] for r in read_split(trained_run / "split.csv") if r["partition"] == "test"]
    boxes = write_boxes(tmp_path / "boxes.csv", [[path, 0.4, 0.5, 0.2, 0.2] for path in tested])
    folder = tmp_path / "evals" / "boxed"
    evaluate(
        compose_task(
            "eval", folder, f"ckpt_path={trained_run}", f"eval.boxes={boxes}", "eval.gallery_images=2"
        )
    )
    gallery, metrics = (folder / "gallery.csv").read_text(), (folder / "metrics.json").read_text()
    damages = [
        (
            "gallery.csv",
            gallery.replace("peak", "summit"),
            r"gallery\.csv is damaged: it lacks the column\(s\) peak",
        ),
        ("gallery/000.png", None, r"gallery\.csv names gallery/000\.png, which is not there"),
        (
            "metrics.json",
            '{"members": [], "localisation": "?"}',
            r"metrics\.json is damaged: not what eval\.py",
        ),
        ("metrics.json", metrics.replace('"estimate"', '"guess"'), r"metrics\.json is damaged"),
    ]
    for name, damaged, message in damages:
        original = (folder / name).read_bytes()
        if damaged is None:
            (folder / name).unlink()
        else:
            (folder / name).write_text(damaged)
        with pytest.raises(BrainMRIError, match=message):
            build_report(tmp_path / "evals", resamples=20)
        assert not (tmp_path / "evals" / "report").exists() or not any(
            (tmp_path / "evals" / "report").iterdir()
        )
        (folder / name).write_bytes(original)
    build_report(tmp_path / "evals", resamples=20)  # whole again

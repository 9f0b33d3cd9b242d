import pytest

from brain_mri.data import download
from brain_mri.errors import BrainMRIError


def fake_kaggle_archive(folder):
    """The Kaggle archive's layout: the class folders sit one level down."""
    for name in ("no", "yes"):
        (folder / "brain_tumor_dataset" / name).mkdir(parents=True)
        (folder / "brain_tumor_dataset" / name / f"{name}1.jpg").write_bytes(b"jpeg")
    return folder


def test_download_copies_the_class_folders_into_root(tmp_path, monkeypatch):
    archive = fake_kaggle_archive(tmp_path / "cache")
    monkeypatch.setattr(download, "is_online", lambda: True)
    monkeypatch.setattr("kagglehub.dataset_download", lambda handle: str(archive))
    root = tmp_path / "data" / "brain_tumor_dataset"
    assert download.ensure_dataset(root, download=True) == root
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg")) == [
        "no/no1.jpg",
        "yes/yes1.jpg",
    ]


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    def refuse(handle):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(download, "is_online", lambda: True)
    monkeypatch.setattr("kagglehub.dataset_download", refuse)
    with pytest.raises(BrainMRIError, match="no route to host") as error:
        download.ensure_dataset(tmp_path / "absent", download=True)
    assert "data=synthetic" in str(error.value)


def test_online_without_consent_does_not_download(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "is_online", lambda: True)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    monkeypatch.setattr(
        "kagglehub.dataset_download", lambda handle: pytest.fail("downloaded without consent")
    )
    with pytest.raises(BrainMRIError, match=r"data\.download=true"):
        download.ensure_dataset(tmp_path / "absent", download=False)


def test_asking_for_a_download_offline_says_it_cannot_and_does_not_suggest_it_again(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "is_online", lambda: False)
    with pytest.raises(BrainMRIError) as error:
        download.ensure_dataset(tmp_path / "absent", download=True)
    message = str(error.value)
    assert message.startswith("data.download=true: Kaggle cannot be reached from this machine")
    assert message.count("data.download=true") == 1 and "data=synthetic" in message

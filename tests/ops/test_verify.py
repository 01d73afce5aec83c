"""verify finds every kind of damage (lost, dark, size, bit-rot, temporaries), never repairs by overwriting,
quarantines only dark files, and records lost files so that get refuses them; get can check checksums itself."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import fsspec
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from skybutler import Butler, FileDataset, Image
from skybutler.cli import main
from skybutler.datastore._files import HOST_TAG
from skybutler.errors import ChecksumMismatchError, CollectionError, ConfigError, FileLostError
from skybutler.ops.verify import PROBLEM_KINDS, QUARANTINE_DIR, verify


@pytest.fixture(params=["sqlite-local", "postgresql-s3"])
def backend(request):
    """The embedded default and the shared central repository's combination."""
    return request.param


@pytest.fixture
def butler(make_butler):
    b = make_butler(run="r", records=True)
    b.register_dataset_type("meta", ["instrument", "visit"], "dict")
    b.register_dataset_type("calexp", ["instrument", "visit", "detector"], "image")
    b.register_dataset_type("src", ["instrument", "visit"], "table")
    b.register_dataset_type("psf", ["instrument", "visit"], "array")
    for visit in (903334, 903336):
        b.put({"seeing": 0.7, "visit": visit}, "meta", instrument="HSC", visit=visit)
        b.put(Image(np.arange(400, dtype="f4").reshape(20, 20)), "calexp", instrument="HSC", visit=visit,
              detector=1)
        b.put(pa.table({"flux": [1.0, 2.0, 3.0]}), "src", instrument="HSC", visit=visit)
        b.put(np.arange(6.0), "psf", instrument="HSC", visit=visit)
    return b


def ref_of(butler: Butler, dataset_type: str, **data_id):
    return butler.find_dataset(dataset_type, {"instrument": "HSC", **data_id})


def path_of(butler: Butler, ref) -> str:
    return butler.registry.get_files([ref.id])[ref.id].path


def fs_of(butler: Butler, path: str):
    """The filesystem and full path of a file of the datastore, as anyone with access sees it."""
    return fsspec.core.url_to_fs(butler.datastore.url(path), **butler.config.datastore.storage_options)


def read(butler: Butler, path: str) -> bytes:
    fs, full = fs_of(butler, path)
    return fs.cat_file(full)


def write(butler: Butler, path: str, data: bytes) -> None:
    fs, full = fs_of(butler, path)
    fs.makedirs(fs._parent(full), exist_ok=True)  # no-op on S3
    fs.pipe_file(full, data)


def delete(butler: Butler, path: str) -> None:
    fs, full = fs_of(butler, path)
    fs.rm_file(full)


def flip_pixel_byte(butler: Butler, path: str) -> bytes:
    """Flip one bit of the pixels of a small FITS image (its last 2880-byte block holds them); same size."""
    data = bytearray(read(butler, path))
    data[len(data) - 2880 + 9] ^= 0x40
    write(butler, path, bytes(data))
    return bytes(data)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def found(report, kind: str) -> list[str]:
    return sorted(p.path for p in report.problems[kind])


def test_a_clean_repository_has_no_problems(butler):
    report = verify(butler)
    assert report.ok and report.counts == dict.fromkeys(PROBLEM_KINDS, 0)
    assert report.files_checked == 8
    assert report.bytes_read == sum(r.size for r, _ in butler.registry.all_files())
    assert verify(butler, checksums=False, workers=1).ok


def test_each_kind_of_damage_is_found_with_its_dataset(butler):
    lost = path_of(butler, ref_of(butler, "meta", visit=903334))
    truncated = path_of(butler, ref_of(butler, "src", visit=903334))
    rotten_ref = ref_of(butler, "calexp", visit=903336, detector=1)
    rotten = path_of(butler, rotten_ref)
    delete(butler, lost)
    write(butler, truncated, read(butler, truncated)[:-10])
    size = len(read(butler, rotten))
    flip_pixel_byte(butler, rotten)
    assert len(read(butler, rotten)) == size
    write(butler, "r/stray/notes.txt", b"copied in by hand")
    temporary = f"r/meta/.meta_1.json.tmp-{HOST_TAG}-{dead_pid()}-{'0' * 32}"
    write(butler, temporary, b"half a fi")

    report = verify(butler)

    assert not report.ok
    assert found(report, "lost") == [lost]
    assert found(report, "size") == [truncated]
    assert found(report, "checksum") == [rotten]
    assert found(report, "dark") == ["r/stray/notes.txt"]
    assert found(report, "temporary") == [temporary]
    assert report.counts == {**dict.fromkeys(PROBLEM_KINDS, 0), "lost": 1, "size": 1, "checksum": 1, "dark": 1,
                             "temporary": 1}
    problem = report.problems["checksum"][0]
    assert problem.dataset_id == rotten_ref.id
    assert problem.dataset == "calexp {instrument=HSC, detector=1, visit=903336} in run r"
    assert problem.detail.startswith("expected md5:") and ", found md5:" in problem.detail
    # Nothing was repaired: the rotten file is still rotten, the dark one still there.
    assert verify(butler).counts == report.counts
    # Sizes only: bit-rot of the same size goes unseen, the rest does not.
    assert verify(butler, checksums=False).counts["checksum"] == 0


def test_a_directly_ingested_file_deleted_where_it_lay_is_lost_and_get_says_so(butler, tmp_path):
    area = tmp_path / "readonly"
    area.mkdir()
    raw = area / "raw.json"
    raw.write_text('{"exposure": 1}')
    butler.register_dataset_type("raw_meta", ["instrument", "visit"], "dict")
    (ref,) = butler.ingest([FileDataset(str(raw), "raw_meta", {"instrument": "HSC", "visit": 903334})],
                           transfer="direct")
    area.chmod(0o555)  # the area is read-only to the repository: only its owner deletes
    try:
        assert verify(butler).ok
        area.chmod(0o755)
        raw.unlink()
    finally:
        area.chmod(0o755)
    report = verify(butler)
    assert found(report, "lost") == [f"file://{raw}"]
    with pytest.raises(FileLostError) as caught:
        butler.get(ref)
    message = str(caught.value)
    assert "raw_meta {instrument=HSC, visit=903334}" in message and str(raw) in message
    assert caught.value.errno == errno.ENOENT


def test_the_batch_services_submissions_and_the_repositorys_own_files_are_not_dark(butler):
    submission = os.path.join(butler.root, "submissions", "r-20260315T060000")
    os.makedirs(os.path.join(submission, "jobs", "job_0001"))
    for name in ("graph.qgraph", "campaign.yaml", "jobs/job_0001/manifest.json", "jobs/job_0001/subset.sqlite3"):
        with open(os.path.join(submission, name), "w") as f:
            f.write("x")
    report = verify(butler)
    assert report.ok, report.to_dict()


def test_quarantine_moves_only_dark_files_and_keeps_their_bytes(butler):
    write(butler, "r/stray/a.fits", b"dark a")
    write(butler, "stray_b.txt", b"dark b")
    temporary = f"r/meta/.meta_1.json.tmp-{HOST_TAG}-{dead_pid()}-{'1' * 32}"
    write(butler, temporary, b"partial")
    lost = path_of(butler, ref_of(butler, "psf", visit=903334))
    delete(butler, lost)

    report = verify(butler, quarantine=True, quarantine_min_age=0)

    assert found(report, "dark") == ["r/stray/a.fits", "stray_b.txt"]
    assert report.quarantined == 2 and report.too_recent == 0
    assert report.quarantine is not None and report.quarantine.startswith(QUARANTINE_DIR + "/")
    assert read(butler, f"{report.quarantine}/r/stray/a.fits") == b"dark a"
    assert read(butler, f"{report.quarantine}/stray_b.txt") == b"dark b"
    assert read(butler, temporary) == b"partial"
    after = verify(butler)
    assert after.counts["dark"] == 0 and after.counts["temporary"] == 1 and found(after, "lost") == [lost]
    assert butler.get(ref_of(butler, "psf", visit=903336)).tolist() == list(np.arange(6.0))


def test_quarantine_leaves_dark_files_placed_less_than_its_minimum_age_ago(butler):
    # A write to an object store, an import or a batch job's staged output is in place
    # before the row that names it is committed: files this new are reported, not moved.
    write(butler, "r/stray/a.fits", b"dark a")
    write(butler, "stray_b.txt", b"dark b")

    report = verify(butler, quarantine=True)

    assert found(report, "dark") == ["r/stray/a.fits", "stray_b.txt"]
    assert report.too_recent == 2 and report.quarantined == 0 and report.quarantine is None
    assert read(butler, "r/stray/a.fits") == b"dark a" and read(butler, "stray_b.txt") == b"dark b"
    with pytest.raises(ConfigError, match="quarantine_min_age"):
        verify(butler, quarantine=True, quarantine_min_age=-1)


def test_a_file_marked_lost_is_refused_by_get_until_verify_finds_it_back(butler):
    ref = ref_of(butler, "src", visit=903336)
    path = path_of(butler, ref)
    content = read(butler, path)
    delete(butler, path)

    report = verify(butler, mark_lost=True)
    assert report.marked_lost == 1

    with pytest.raises(FileLostError) as caught:
        butler.get(ref)
    message = str(caught.value)
    assert f"src {{instrument=HSC, visit=903336}} (id {ref.id}, run r) is recorded lost (noticed 20" in message
    assert f"its file {path}: missing: no file." in message
    write(butler, path, content)
    with pytest.raises(FileLostError):  # restored, but the registry still says lost until verify looks
        butler.get(ref)
    again = verify(butler, mark_lost=True)
    assert again.ok and again.cleared == 1
    assert butler.get(ref).column("flux").to_pylist() == [1.0, 2.0, 3.0]


def test_a_corrupted_file_marked_lost_stays_marked_until_its_bytes_are_right(butler):
    ref = ref_of(butler, "calexp", visit=903334, detector=1)
    path = path_of(butler, ref)
    good = read(butler, path)
    flip_pixel_byte(butler, path)
    assert verify(butler, mark_lost=True).marked_lost == 1
    with pytest.raises(FileLostError, match=r"UTC\): its file .*: checksum: expected md5:\w+, found md5:"):
        butler.get(ref)
    assert verify(butler, checksums=False, mark_lost=True).cleared == 0  # sizes alone cannot clear bit-rot
    write(butler, path, good)
    assert verify(butler, mark_lost=True).cleared == 1
    assert butler.get(ref).data[0, 2] == 2.0


def test_runs_limits_the_check_to_their_files(butler):
    other = butler.with_run("other")
    other.put({"x": 1}, "meta", instrument="HSC", visit=903338)
    delete(butler, path_of(butler, ref_of(butler, "meta", visit=903334)))
    write(butler, "stray.txt", b"x")
    report = verify(butler, runs=["other"])
    assert report.ok and report.files_checked == 1 and report.files_walked == 0
    assert verify(butler, runs=["r"]).counts["lost"] == 1
    with pytest.raises(CollectionError):
        verify(butler, runs=["nope"])


def test_verify_on_read_is_off_by_default_and_catches_a_flipped_byte(butler):
    ref = ref_of(butler, "calexp", visit=903334, detector=1)
    path = path_of(butler, ref)
    flip_pixel_byte(butler, path)
    silently_wrong = butler.get(ref)  # off by default: a wrong pixel, no error
    assert silently_wrong.data.ravel().tolist() != list(np.arange(400, dtype="f4"))

    butler.config.datastore.verify_on_read = True
    with pytest.raises(ChecksumMismatchError) as caught:
        butler.get(ref)
    message = str(caught.value)
    record = butler.registry.get_files([ref.id])[ref.id]
    assert "calexp {instrument=HSC, detector=1, visit=903334}" in message and path in message
    assert f"the registry recorded md5:{record.checksum}" in message and message.count("md5:") == 2
    # Every other format reads, checked, as before.
    assert butler.get("meta", instrument="HSC", visit=903336) == {"seeing": 0.7, "visit": 903336}
    assert butler.get("src", instrument="HSC", visit=903336).num_rows == 3
    assert butler.get("psf", instrument="HSC", visit=903336).tolist() == list(np.arange(6.0))
    box = butler.get("calexp", instrument="HSC", visit=903336, detector=1, parameters={"bbox": (0, 2, 0, 2)})
    assert box.data.tolist() == [[0.0, 1.0], [20.0, 21.0]]


# -- command line ----------------------------------------------------------------------------


def test_cli_verify_exits_0_when_clean_and_1_with_problems(butler):
    runner = CliRunner()
    clean = runner.invoke(main, ["verify", butler.root])
    assert clean.exit_code == 0, clean.output
    assert "no problems" in clean.output
    delete(butler, path_of(butler, ref_of(butler, "meta", visit=903334)))
    damaged = runner.invoke(main, ["verify", butler.root, "--workers", "2"])
    assert damaged.exit_code == 1
    assert "lost" in damaged.output and "meta" in damaged.output


def test_cli_verify_json_is_one_document(butler):
    write(butler, "stray.txt", b"x")
    result = CliRunner().invoke(main, ["verify", butler.root, "--json", "--no-checksums"])
    assert result.exit_code == 1
    document = json.loads(result.output)
    assert document["ok"] is False and document["checksums"] is False
    assert document["counts"]["dark"] == 1 and set(document["counts"]) == set(PROBLEM_KINDS)
    assert document["problems"]["dark"] == [
        {"kind": "dark", "path": "stray.txt", "dataset_id": None, "dataset": "", "detail": "no dataset names this file"}]
    assert document["files_checked"] == 8


def test_files_of_an_interrupted_removal_are_reported_as_such_not_as_dark(butler):
    ref = ref_of(butler, "psf", visit=903334)
    path = path_of(butler, ref)
    # What remove_datasets does before a crash: the list written, the rows deleted, the file not yet.
    listing = butler.datastore.record_removal([path], label="datasets")
    butler.registry.remove_datasets([ref.id])
    report = verify(butler)
    assert found(report, "removal") == [path] and report.counts["dark"] == 0
    assert listing in report.problems["removal"][0].detail
    assert butler.clean_temporaries() == 1
    assert verify(butler).ok

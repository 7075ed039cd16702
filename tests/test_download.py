"""The download path, for real: torchvision fetches the archives over HTTP from a mirror on 127.0.0.1.

The mirror serves gzip archives made at test time from the shared copy. They are compressed here, so their
bytes (and MD5s) differ from the published archives: torchvision's archive list is pointed at them, while the
project's own check of the unpacked files still compares them with the published MD5s (``mnist_files.RAW_MD5``).
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from torchvision import datasets

from mnist_cnn import data
from mnist_cnn.errors import DataError
from mnist_cnn.mnist import RAW_FILES, raw_folder
from mnist_cnn.tooling.cli import download
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.safety.mnist_files import check_raw_files, ensure_mnist

MAX_REQUESTS = 64  # torchvision asks twice per archive (a redirect probe, then the download): 8 when all goes well


@dataclass
class Mirror:
    """A local HTTP mirror: where it listens, what it serves, and how it misbehaves per archive."""

    url: str
    folder: Path
    #: archive name -> "truncated" (a complete response of half the file) or "cut" (the connection closes half-way)
    faults: dict[str, str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)


class MirrorHandler(SimpleHTTPRequestHandler):
    """Serves the archives, with the faults the mirror asks for; never logs to stderr."""

    mirror: Mirror

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        name = self.path.lstrip("/")
        self.mirror.requests.append(name)
        if len(self.mirror.requests) > MAX_REQUESTS:
            self.send_error(429)
            return
        fault = self.mirror.faults.get(name)
        if fault is None:
            try:
                super().do_GET()
            except OSError:  # the client's redirect probe hangs up without reading the body
                self.close_connection = True
            return
        body = (self.mirror.folder / name).read_bytes()
        half = body[: len(body) // 2]
        self.send_response(200)
        self.send_header("Content-Type", "application/gzip")
        # "cut" promises the whole file and stops half-way; "truncated" sends a short file that says it is short
        self.send_header("Content-Length", str(len(body) if fault == "cut" else len(half)))
        self.end_headers()
        try:
            self.wfile.write(half)
        except OSError:  # the client's redirect probe hangs up without reading
            pass
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        pass


def _gzip(source: Path, target: Path) -> str:
    with source.open("rb") as raw, gzip.open(target, "wb", compresslevel=1) as packed:
        shutil.copyfileobj(raw, packed)
    return hashlib.md5(target.read_bytes()).hexdigest()


@dataclass
class Archives:
    """The four ``.gz`` archives made from the shared copy: their folder and their MD5s, by archive name."""

    folder: Path
    md5: dict[str, str]


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Archives:
    folder = tmp_path_factory.mktemp("archives")
    return Archives(folder, {f"{name}.gz": _gzip(raw_folder(data_dir) / name, folder / f"{name}.gz") for name in RAW_FILES})


@pytest.fixture
def mirror(archives: Archives, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Mirror]:
    """A threaded HTTP server on 127.0.0.1 that torchvision's MNIST downloads from; always shut down."""
    folder = tmp_path / "served"  # a private copy, so a test may replace a file
    shutil.copytree(archives.folder, folder)
    state = Mirror(url="", folder=folder)
    handler = type("Handler", (MirrorHandler,), {"mirror": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    monkeypatch.setattr(datasets.MNIST, "mirrors", [state.url])
    monkeypatch.setattr(datasets.MNIST, "resources", list(archives.md5.items()))
    # the download's scratch folder goes here, so a test can see that nothing is left behind
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert not any(scratch.iterdir()), f"left behind: {sorted(scratch.rglob('*'))}"
    assert len(state.requests) <= MAX_REQUESTS


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


@pytest.fixture
def half_filled_root(tmp_path: Path, data_dir: Path) -> Path:
    """A data root that holds the test split and lacks the training split."""
    folder = raw_folder(tmp_path / "data")
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copyfile(raw_folder(data_dir) / name, folder / name)
    return tmp_path / "data"


def test_fresh_root_fills_from_the_mirror(mirror: Mirror, tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    root = tmp_path / "fresh" / "data"
    assert ensure_mnist(root) == root
    assert sorted(p.name for p in raw_folder(root).iterdir()) == sorted(RAW_FILES), "only the four files, no archives"
    check_raw_files(root)  # magic numbers, sizes and the published MD5s of the unpacked files
    assert sorted(set(mirror.requests)) == sorted(f"{name}.gz" for name in RAW_FILES)
    err = capfd.readouterr().err
    assert "100%" in err, "torchvision's progress bar"


def test_study_loader_downloads_what_is_missing(mirror: Mirror, half_filled_root: Path) -> None:
    """The notebooks' loader fetches the missing training files itself: only they are added, no archives, no scratch left."""
    before = snapshot(half_filled_root)
    train = data.load_split("train", half_filled_root)
    assert len(train) == 60_000 and train.labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert sorted(p.name for p in raw_folder(half_filled_root).iterdir()) == sorted(RAW_FILES), "only the four files, no archives"
    after = snapshot(half_filled_root)
    kept = [name for name in before if name.endswith("ubyte")]  # the folders' times change as files arrive
    assert len(kept) == 2 and all(after[name] == before[name] for name in kept), "files already there are not rewritten"
    check_raw_files(half_filled_root)  # what arrived matches the published MD5s


def test_download_command_fills_and_reports(mirror: Mirror, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "data"
    assert run_cli(download.main, ["--data-dir", str(root)]) == 0
    assert "match the published MD5s" in capsys.readouterr().out
    check_raw_files(root)


@pytest.mark.parametrize(
    ("fault", "archive_md5_known"),
    [("truncated", True), ("cut", True), ("truncated", False), ("cut", False)],
    ids=["truncated", "stops-mid-way", "truncated-no-archive-md5", "stops-mid-way-no-archive-md5"],
)
def test_bad_download_leaves_root_as_it_was(
    mirror: Mirror,
    half_filled_root: Path,
    fault: str,
    archive_md5_known: bool,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    bad = "train-labels-idx1-ubyte.gz"
    mirror.faults[bad] = fault
    if not archive_md5_known:  # then only the project's own check of the unpacked file stands between it and the data root
        monkeypatch.setattr(datasets.MNIST, "resources", [(name, None) for name, _ in datasets.MNIST.resources])
    before = snapshot(half_filled_root)
    status = run_cli(download.main, ["--data-dir", str(half_filled_root)])
    error = capsys.readouterr().err
    assert status == 1 and "Traceback" not in error
    # stderr holds torchvision's progress bars, then one line that says what went wrong
    last = error.splitlines()[-1]
    assert [line for line in error.splitlines() if "error" in line.lower()] == [last], error
    if archive_md5_known:  # torchvision's check of the archive refuses it
        assert "downloading them failed (Error downloading train-labels-idx1-ubyte.gz" in last and "corrupted" in last, last
    else:  # the project's check of what was unpacked
        assert "nothing was written to" in last and "train-labels-idx1-ubyte is truncated" in last, last
    assert snapshot(half_filled_root) == before


def test_wrong_file_under_the_right_name(mirror: Mirror, half_filled_root: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A well-formed labels file with other labels, from a mirror whose archive list has no MD5s: the published MD5 catches it."""
    labels = bytearray((raw_folder(data_dir) / "train-labels-idx1-ubyte").read_bytes())
    labels[8:] = bytes((label + 1) % 10 for label in labels[8:])
    with gzip.open(mirror.folder / "train-labels-idx1-ubyte.gz", "wb") as packed:
        packed.write(labels)
    monkeypatch.setattr(datasets.MNIST, "resources", [(name, None) for name, _ in datasets.MNIST.resources])
    before = snapshot(half_filled_root)
    with pytest.raises(DataError, match=r"nothing was written to .*train-labels-idx1-ubyte is corrupt: its MD5") as caught:
        ensure_mnist(half_filled_root)
    assert "\n" not in str(caught.value)
    assert snapshot(half_filled_root) == before


def test_wrong_archive_is_refused_by_its_md5(mirror: Mirror, half_filled_root: Path) -> None:
    """The same wrong file where the archive's MD5 is known: torchvision refuses it, and the message names it."""
    (mirror.folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not MNIST"))
    before = snapshot(half_filled_root)
    with pytest.raises(DataError, match=r"downloading them failed \(Error downloading train-images-idx3-ubyte.gz.*corrupted"):
        ensure_mnist(half_filled_root)
    assert snapshot(half_filled_root) == before

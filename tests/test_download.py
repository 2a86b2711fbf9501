"""Downloads against a real HTTP server on 127.0.0.1 serving ../shared/data/lfw-mini.tgz."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from maskdet.core import download as dl
from maskdet.faces.data import download_and_prepare

from .conftest import LFW_MINI_MD5


class Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    mode = "ok"  # ok | cut (close half-way) | norange (ignore Range) | corrupt (flip bytes)
    requests: list[str] = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 (http.server API)
        data = self.payload
        if self.mode == "corrupt":
            data = data[:1000] + bytes(b ^ 0xFF for b in data[1000:1100]) + data[1100:]
        start = 0
        rng = self.headers.get("Range")
        type(self).requests.append(rng or "")
        if rng and self.mode != "norange":
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.mode == "cut":
            type(self).mode = "ok"  # the next request succeeds
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@pytest.fixture()
def server(lfw_mini):
    Handler.payload = lfw_mini.read_bytes()
    Handler.mode = "ok"
    Handler.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/lfw-mini.tgz"
    httpd.shutdown()


def test_download_verifies_md5(server, tmp_path):
    got = dl.download_url([server], tmp_path / "a.tgz", LFW_MINI_MD5, progress=False)
    assert dl.md5sum(got) == LFW_MINI_MD5
    assert not (tmp_path / "a.tgz.part").exists()


def test_resume_after_interrupted_download(server, tmp_path, lfw_mini):
    part = tmp_path / "a.tgz.part"
    part.write_bytes(lfw_mini.read_bytes()[:1_000_000])  # what an interrupted run leaves
    dl.download_url([server], tmp_path / "a.tgz", LFW_MINI_MD5, progress=False)
    assert Handler.requests == ["bytes=1000000-"]
    assert dl.md5sum(tmp_path / "a.tgz") == LFW_MINI_MD5


def test_restart_cleanly_when_server_ignores_range(server, tmp_path, lfw_mini):
    Handler.mode = "norange"
    (tmp_path / "a.tgz.part").write_bytes(b"garbage from an old attempt" * 1000)
    dl.download_url([server], tmp_path / "a.tgz", LFW_MINI_MD5, progress=False)
    assert dl.md5sum(tmp_path / "a.tgz") == LFW_MINI_MD5


def test_cut_connection_is_retried_and_resumed(server, tmp_path):
    Handler.mode = "cut"
    dl.download_url([server], tmp_path / "a.tgz", LFW_MINI_MD5, progress=False, backoff=0)
    assert len(Handler.requests) == 2 and Handler.requests[1].startswith("bytes=")
    assert dl.md5sum(tmp_path / "a.tgz") == LFW_MINI_MD5


def test_checksum_mismatch_is_an_error_and_file_is_not_kept(server, tmp_path):
    Handler.mode = "corrupt"
    with pytest.raises(dl.ChecksumError, match="checksum mismatch"):
        dl.download_url([server], tmp_path / "a.tgz", LFW_MINI_MD5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_stale_final_file_with_wrong_md5_is_replaced(server, tmp_path):
    (tmp_path / "a.tgz").write_bytes(b"not the archive")
    dl.download_url([server], tmp_path / "a.tgz", LFW_MINI_MD5, progress=False)
    assert dl.md5sum(tmp_path / "a.tgz") == LFW_MINI_MD5


def test_mirrors_tried_in_turn(server, tmp_path):
    dead = "http://127.0.0.1:9/nothing-listens-here.tgz"
    dl.download_url([dead, server], tmp_path / "a.tgz", LFW_MINI_MD5, progress=False, retries=1)
    assert dl.md5sum(tmp_path / "a.tgz") == LFW_MINI_MD5


def test_no_network_names_the_offline_option(tmp_path):
    with pytest.raises(dl.DownloadError) as err:
        dl.download_url(
            ["http://127.0.0.1:9/x.tgz"],
            tmp_path / "x.tgz",
            None,
            progress=False,
            retries=2,
            backoff=0,
        )
    assert "--source" in str(err.value) and "lfw-deepfunneled.tgz" in str(err.value)


def test_official_table_row():
    row = dl.DOWNLOADS["lfw"]
    assert row.md5 == "68331da3eb755a505a502b5aacb3c201"
    assert all(u.endswith("lfw-deepfunneled.tgz") for u in row.urls) and len(row.urls) >= 2


def test_stage01_from_url_source(server, tmp_path):
    out = tmp_path / "data"
    result = download_and_prepare(
        f"{server}#md5={LFW_MINI_MD5}", out, limit_identities=10, progress=False
    )
    assert result["written"] > 0 and (out / "manifest.csv").exists()
    assert Path(out / "raw" / "lfw-mini.tgz").exists()

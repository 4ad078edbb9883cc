"""`medft serve`: the page in a real browser (headless Chromium through Playwright), the
upload handler behind it, the model card's notice, and the files of a Hugging Face Space.

The browser tests need Chromium and the `playwright` package (`medft[dev]`); without them
they skip, saying so, except under CI=true (.ci/run installs Chromium), where they fail.
`MEDFT_SCREENSHOT=1` saves the page as docs/images/serve.png (the README's picture);
otherwise the screenshot goes to the test's temporary folder.
"""

from __future__ import annotations

import csv
import json
import os
import runpy
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import gradio as gr
import huggingface_hub.constants
import numpy as np
import pytest
from PIL import Image

from medft.cli import main
from medft.commands.predict import predict
from medft.commands.serve import (
    SESSIONS_KEPT,
    answer,
    build_app,
    card_notice,
    gallery,
    launch,
    load_served_model,
    model_folder,
)
from medft.commands.space import write_space
from medft.config.inference import PredictArguments
from medft.errors import MedftError
from tests import pretrained
from tests.oversized import constant_png, rle_dicom

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "serve.png"
CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
UPLOAD_LIMIT_MB = 0.05  # small, so the test can send a file that is too large
LOADED = "document.querySelector('#results') && document.querySelector('#results').innerText"


def browser_missing() -> str | None:
    if CHROMIUM is None:
        return "no Chromium on PATH: apt-get install chromium (README, Serve)"
    try:
        import playwright.sync_api  # noqa: F401
    except ModuleNotFoundError:
        return "the playwright package is missing: pip install -e '.[dev]'"
    return None


# in CI the browser tests always run (.ci/run installs Chromium): a missing browser fails them
needs_browser = pytest.mark.skipif(
    browser_missing() is not None and os.environ.get("CI") != "true", reason=str(browser_missing())
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def chest_images(nih_raw: Path, count: int) -> list[Path]:
    return sorted(nih_raw.glob("images_00*/images/*.png"))[:count]


@pytest.fixture(scope="module")
def page_url(trained_multilabel):
    """The page of the multi-label test model, served on a free local port."""
    app = build_app(load_served_model(trained_multilabel))
    port = free_port()
    launch(app, port, max_upload_mb=UPLOAD_LIMIT_MB, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def page(page_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 1000})
        tab.set_default_timeout(60_000)
        tab.goto(page_url)
        tab.wait_for_selector("#upload input[type=file]", state="attached")
        yield tab
        browser.close()


def upload(page, files: list[Path], expected: str) -> str:
    """Upload ``files`` and wait until the results say ``expected``; the results' text."""
    page.set_input_files("#upload input[type=file]", [str(path) for path in files])
    page.wait_for_function(f"{LOADED}.includes({expected!r})")
    return page.inner_text("#results")


def shown_tables(page) -> dict[str, list[list[str]]]:
    """Each image's heading and the rows of its table, as the browser renders them."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#results h4')].map(h => {
            let table = h.nextElementSibling;
            while (table && table.tagName !== 'TABLE') { table = table.nextElementSibling; }
            const rows = [...table.querySelectorAll('tbody tr')];
            return [h.innerText.trim(), rows.map(r => [...r.cells].map(c => c.innerText.trim()))];
        }))"""
    )


@needs_browser
def test_the_page_shows_every_finding_with_its_threshold_and_grad_cam(
    page, trained_multilabel, nih_raw, tmp_path
):
    images = chest_images(nih_raw, 2)
    text = upload(page, images, "2 of 2 file(s) classified")
    assert "tuned on validation" in text
    notice = page.inner_text("#notice")
    assert "Not for clinical use." in notice and "Intended use and limitations" in notice

    csv_path = tmp_path / "predictions.csv"  # what medft predict says about the same files
    predict(
        PredictArguments(
            model=[trained_multilabel],
            inputs=images,
            output=csv_path,
            num_workers=0,
            progress=False,
        )
    )
    with csv_path.open(newline="") as handle:
        expected = {Path(row["path"]).name: row for row in csv.DictReader(handle)}
    tables = shown_tables(page)
    assert sorted(tables) == sorted(expected)
    for name, rows in tables.items():
        assert len(rows) == 14  # every finding, with its threshold and whether it is reached
        flagged = set(filter(None, expected[name]["findings"].split(";")))
        for finding, probability, _threshold, above in rows:
            assert float(probability) == pytest.approx(float(expected[name][finding]), abs=6e-5)
            assert above == ("yes" if finding in flagged else "no")

    page.check("#grad-cam input")
    page.wait_for_function("document.querySelector('#gallery').innerText.includes('Grad-CAM for')")
    captions = page.inner_text("#gallery")
    assert all(f"{path.name}: Grad-CAM for" in captions for path in images)
    wanted = os.environ.get("MEDFT_SCREENSHOT") == "1"
    page.screenshot(path=str(SCREENSHOT if wanted else tmp_path / "serve.png"))


@needs_browser
def test_bad_uploads_get_a_message_and_the_server_stays_up(page, nih_raw, tmp_path):
    notes, empty, huge = tmp_path / "notes.png", tmp_path / "empty.jpg", tmp_path / "huge.png"
    notes.write_text("a referral letter, not an image")
    empty.write_bytes(b"")
    text = upload(page, [notes, empty], "0 of 2 file(s) classified")
    assert "notes.png: not readable as an image (UnidentifiedImageError" in text
    assert "empty.jpg: the file is empty" in text
    assert str(tmp_path) not in text  # the server's paths stay on the server

    huge.write_bytes(os.urandom(int(UPLOAD_LIMIT_MB * 1e6) + 1000))
    page.set_input_files("#upload input[type=file]", [str(huge)])
    page.get_by_text("exceed the maximum allowed size").wait_for()  # Gradio's own refusal

    image = chest_images(nih_raw, 1)[0]
    page.reload()
    page.wait_for_selector("#upload input[type=file]", state="attached")
    assert image.name in upload(page, [image], "1 of 1 file(s) classified")


# the handler behind the page ------------------------------------------------------------------


def test_a_binary_model_shows_its_decision_at_the_stored_threshold(trained_binary, brain_raw):
    served = load_served_model(trained_binary)
    scans = sorted((brain_raw / "Glioblastoma T2").glob("*.jp*g"))[:2]
    text, shown, upload = answer(served)([str(path) for path in scans], True)
    text = text.replace("\\", "")  # Markdown escapes
    assert text.count(f"threshold {served.thresholds['tumor']:.3f})") == 2
    assert [caption.split(":")[0] for _, caption in shown] == [path.name for path in scans]
    overlay = shown[0][0]
    assert overlay.dtype == np.uint8 and overlay.shape[2] == 3
    _, plain, _ = answer(served)([str(scans[0])], False)
    assert isinstance(plain[0][0], Image.Image)
    assert all(path.is_file() for path in scans)  # files not uploaded through Gradio stay
    # the Grad-CAM toggle redraws the gallery from the images the upload kept, not the files
    assert [caption for _, caption in gallery(served, upload, False)] == [p.name for p in scans]
    assert np.array_equal(gallery(served, upload, True)[0][0], overlay)


def test_a_decompression_bomb_is_refused_with_a_message(trained_binary, tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20_000, 10_000)).save(bomb)  # 200 megapixels in a few kilobytes
    text, shown, _ = answer(load_served_model(trained_binary))([str(bomb)], False)
    text = text.replace("\\", "")  # Markdown escapes
    assert "**bomb.png**: not readable as an image (ImageTooLarge: image too large" in text
    assert not shown


def test_the_handler_reports_failures_on_the_page_instead_of_raising(trained_binary, tmp_path):
    handle = answer(load_served_model(trained_binary))
    text, shown, _ = handle([str(tmp_path / "vanished.png")], False)
    assert text.startswith("**Could not classify these files**") and shown == []
    assert handle(None, False)[0] == "Upload one or more images (PNG, JPEG, DICOM)."


def test_the_notice_comes_from_the_model_card_or_says_there_is_none(trained_binary, tmp_path):
    notice = card_notice(trained_binary)
    assert notice.startswith("> **Not for clinical use.**")
    assert "### Intended use and limitations\n\nIntended for research on binary" in notice
    bare = card_notice(tmp_path)
    assert bare.startswith("> **Not for clinical use.**") and "has no model card" in bare


def test_models_come_from_folders_or_the_hub(trained_binary, tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    pretrained.add_to_hub_cache(cache, "medft-tests/brain-binary", trained_binary)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    assert model_folder("medft-tests/brain-binary").name == pretrained.CACHE_COMMIT
    with pytest.raises(MedftError, match="could not be downloaded"):
        model_folder("medft-tests/not-there")
    with pytest.raises(MedftError, match="is not a folder"):
        model_folder(str(tmp_path / "missing"))
    with pytest.raises(MedftError, match="needs the PyTorch model folder"):
        model_folder(tmp_path / "model.onnx")


def test_the_space_app_builds_its_page_from_the_hub_model(trained_binary, tmp_path, monkeypatch):
    space = tmp_path / "space"
    written = write_space("medft-tests/brain-binary", space, max_upload_mb=20)
    assert [path.name for path in written] == ["app.py", "requirements.txt", "README.md"]
    assert (space / "requirements.txt").read_text().startswith("medft[serve]==")
    readme = (space / "README.md").read_text()
    assert "sdk: gradio" in readme and "medft-tests/brain-binary" in readme
    assert "launch(demo, max_upload_mb=20)" in (space / "app.py").read_text()

    cache = tmp_path / "hub"  # the Space downloads the model; here the Hub cache holds it
    pretrained.add_to_hub_cache(cache, "medft-tests/brain-binary", trained_binary)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    demo = runpy.run_path(str(space / "app.py"))["demo"]  # imported, not run: no server
    assert isinstance(demo, gr.Blocks) and demo.title == "brain-binary · medft"
    with pytest.raises(MedftError, match="loads its model from the Hub"):
        write_space(str(trained_binary), tmp_path / "other")


def test_the_command_writes_a_space_or_says_what_is_wrong(tmp_path, capsys):
    assert main(["serve", "--model", "user/brain-binary", "--write-space", str(tmp_path)]) == 0
    assert "Wrote app.py, requirements.txt, README.md" in capsys.readouterr().out
    assert 'load_served_model("user/brain-binary")' in (tmp_path / "app.py").read_text()
    assert main(["serve", "--model", str(tmp_path / "model.onnx")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "needs the PyTorch model folder" in error[0]


# bombs: files whose headers declare huge images -------------------------------------------------

MEMORY_BOUND_MB = 150
PEAK_MEMORY = """
import json, resource, sys
from medft.commands.serve import answer, load_served_model

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

handle = answer(load_served_model(sys.argv[1]))
handle([sys.argv[2]], False)  # a real scan first: imports and first-call buffers come before
before = peak_mb()
text = handle(sys.argv[3:], False)[0]
print(json.dumps({"grown_mb": peak_mb() - before, "text": text}))
"""


def test_bombs_are_refused_from_their_headers_in_bounded_memory(
    trained_binary, brain_raw, tmp_path
):
    bombs = [
        rle_dicom(tmp_path / "rle_10000.dcm", 10_000, 10_000),  # 1.6 MB
        rle_dicom(tmp_path / "rle_15000.dcm", 15_000, 15_000),  # 3.5 MB
        constant_png(tmp_path / "grey_12000.png", 12_000, 12_000),  # 140 KB
    ]
    scan = sorted((brain_raw / "Glioblastoma T2").glob("*.jp*g"))[0]
    run = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY, str(trained_binary), str(scan), *map(str, bombs)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(run.stdout.strip().splitlines()[-1])
    text = measured["text"].replace("\\", "")  # Markdown escapes
    assert "0 of 3 file(s) classified" in text
    refusal = "not readable as an image (ImageTooLarge: image too large to decode safely"
    assert all(f"**{bomb.name}**: {refusal}" in text for bomb in bombs)
    assert "10000 x 10000 pixels (100.0 megapixels) is over medft's budget of 50 megapixels" in text
    assert "MEDFT_MAX_MEGAPIXELS" in text
    assert measured["grown_mb"] < MEMORY_BOUND_MB, measured


# limits and privacy -----------------------------------------------------------------------------


def test_files_over_the_cap_are_listed_as_not_classified(trained_binary, brain_raw):
    scans = sorted((brain_raw / "Glioblastoma T2").glob("*.jp*g"))[:3]
    handle = answer(load_served_model(trained_binary), max_files=2)
    text, shown, upload = handle([str(path) for path in scans], False)
    text = text.replace("\\", "")  # Markdown escapes
    assert "2 of 3 file(s) classified" in text
    assert f"**{scans[2].name}**: over the limit of 2 files per upload; upload it again" in text
    assert len(shown) == len(upload.images) == 2


def test_the_limits_must_be_positive(capsys):
    for option in ("--max-files", "--max-queue"):
        assert main(["serve", "--model", "user/model", option, "0"]) == 2
        assert f"{option} must be at least 1, got 0." in capsys.readouterr().err


def test_the_queue_and_the_sessions_kept_are_bounded(trained_binary):
    app = build_app(load_served_model(trained_binary))
    launch(app, free_port(), max_queue=3, prevent_thread_lock=True, quiet=True)
    try:
        assert app._queue.max_size == 3  # Gradio turns the fourth waiting request away
        assert app.state_session_capacity == SESSIONS_KEPT  # and forgets the oldest sessions
    finally:
        app.close()


def wait_for_page(url: str, server: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"medft serve did not come up at {url} (exit status {server.poll()})")


def test_uploads_are_deleted_once_read_and_the_server_folder_goes_with_it(
    trained_binary, brain_raw, tmp_path
):
    from gradio_client import Client, handle_file

    temp = tmp_path / "tmp"  # the server's $TMPDIR: whatever it writes lands here
    temp.mkdir()
    scans = sorted((brain_raw / "Glioblastoma T2").glob("*.jp*g"))[:2]
    uploads = [tmp_path / f"Doe_Jane_1961_{i}.jpg" for i in range(2)]  # named after a patient
    for scan, upload in zip(scans, uploads):
        shutil.copy(scan, upload)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "GRADIO_TEMP_DIR"}
    command = [sys.executable, "-m", "medft.cli", "serve", "--model", str(trained_binary),
               "--port", str(port), "--max-files", "1"]  # fmt: skip
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(command, env=env | {"TMPDIR": str(temp)}, stdout=log, stderr=log)
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", server)
        (folder,) = temp.glob("medft-serve-*")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700

        client = Client(f"http://127.0.0.1:{port}/", download_files=False, verbose=False)
        files = [handle_file(str(upload)) for upload in uploads]
        text = client.predict(files, False, api_name="/classify")[0].replace("\\", "")
        assert "1 of 2 file(s) classified" in text
        assert f"**{uploads[1].name}**: over the limit of 1 files per upload" in text
        contents = {scan.read_bytes() for scan in scans}
        kept = [
            path
            for path in folder.rglob("*")
            if path.is_file() and ("Doe_Jane" in path.name or path.read_bytes() in contents)
        ]
        assert kept == []  # the gallery's picture is re-encoded, nameless
        assert not (temp / "gradio").exists()  # Gradio's own default: nothing of it is used
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=120)
    assert status == 0 and not folder.exists()

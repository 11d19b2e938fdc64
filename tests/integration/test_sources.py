"""Sources: parsing --source, video files, image folders, demo and stamped synthetic frames."""
from __future__ import annotations

import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge_saliency.pipeline import sources
from edge_saliency.pipeline.sources import EndOfStream, SourceError


def write_video(path, frames, fps=30.0):
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert vw.isOpened()
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def test_source_text_picks_the_right_kind(tmp_path):
    (tmp_path / "imgs").mkdir()
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((16, 16, 3), np.uint8))
    vid = tmp_path / "v.mp4"
    vid.write_bytes(b"x")
    cases = {
        "0": sources.WebcamSource, "/dev/video3": sources.WebcamSource,
        "rtsp://127.0.0.1:8554/cam": sources.StreamSource, "http://cam.local/video.mjpg": sources.StreamSource,
        "nvarguscamerasrc ! nvvidconv ! appsink drop=true max-buffers=1": sources.GStreamerSource,
        "demo": sources.DemoSource, "synthetic": sources.SyntheticSource,
        str(tmp_path / "imgs"): sources.ImageSource, str(img): sources.ImageSource, str(vid): sources.VideoFileSource,
    }
    for text, cls in cases.items():
        assert type(sources.make_source(text)) is cls, text


@pytest.mark.parametrize("text,words", [
    ("no/such/file.mp4", "no such file"),
    ("ftp://host/x.mp4", "unsupported URL scheme"),
])
def test_bad_source_text_is_a_one_line_error(text, words):
    with pytest.raises(SourceError, match=r"^[^\n]*" + re.escape(words) + r"[^\n]*$"):
        sources.make_source(text)


def test_video_file_reads_every_frame_then_ends(tmp_path):
    frames = [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(12)]
    src = sources.make_source(str(write_video(tmp_path / "v.mp4", frames, fps=25)))
    src.open()
    assert src.fps == pytest.approx(25)
    assert src.frame_count == 12
    got = []
    with pytest.raises(EndOfStream):  # a bare sentinel, raised without a message: its type is the signal
        while True:
            got.append(src.read())
    assert len(got) == 12
    assert [int(round(g.mean() / 10)) for g in got] == list(range(12))
    src.release()
    src.release()  # twice is fine


def test_not_a_video_is_a_clear_error(tmp_path):
    p = tmp_path / "notes.mp4"
    p.write_text("this is not a video")
    with pytest.raises(SourceError, match="cannot decode"):
        sources.open_source(str(p))


def test_missing_camera_is_a_clear_error():
    with pytest.raises(SourceError, match="camera 57"):
        sources.open_source("57")


# what this OpenCV was built with decides which branch runs: pip's OpenCV has no GStreamer (the NO
# branch); a Jetson's or a distribution's system OpenCV usually has it (the YES branch)
HAS_GSTREAMER = sources.gstreamer_available()
NO_GSTREAMER = ("this OpenCV build has no GStreamer support (cv2.getBuildInformation()); install an OpenCV built "
                "with GStreamer (e.g. the Jetson system OpenCV) to use a pipeline")
TEST_PIPELINE = "videotestsrc num-buffers=5 ! video/x-raw,width=320,height=240 ! videoconvert ! appsink"


@pytest.mark.parametrize("info, expect", [
    ("  Video I/O:\n    DC1394:                      NO\n    GStreamer:                   YES (1.22.0)\n", True),
    ("  Video I/O:\n    GStreamer:                   YES\n", True),
    ("  Video I/O:\n    FFMPEG:                      YES\n    GStreamer:                   NO\n", False),
    ("  Video I/O:\n    FFMPEG:                      YES\n", False),  # not mentioned at all
])
def test_gstreamer_support_is_read_from_the_build_information(monkeypatch, info, expect):
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: info)
    assert sources.gstreamer_available() is expect


def test_gstreamer_pipeline_text_is_a_pipeline_source():
    for text in (TEST_PIPELINE, "nvarguscamerasrc ! nvvidconv ! appsink", "v4l2src ! fakesink", " appsink "):
        src = sources.make_source(text)
        assert type(src) is sources.GStreamerSource and src.live and not src.finite, text
        assert src.describe() == "gstreamer pipeline" and src.clone().spec == src.spec
    assert type(sources.make_source("rtsp://cam/a ! b")) is sources.StreamSource  # a URL stays a URL


def test_gstreamer_pipeline_reads_frames_or_says_this_opencv_has_no_gstreamer():
    src = sources.make_source(TEST_PIPELINE)
    if not HAS_GSTREAMER:
        with pytest.raises(SourceError, match=r"^" + re.escape(NO_GSTREAMER) + r"$"):
            src.open()
        assert src.cap is None
        return
    src.open()  # an OpenCV with GStreamer: the pipeline really runs
    try:
        frames = [src.read() for _ in range(8)]  # num-buffers=5: five frames, then reads fail (None)
    finally:
        src.release()
    got = [f for f in frames if f is not None]
    assert len(got) == 5 and frames[5:] == [None, None, None]
    assert all(f.shape == (240, 320, 3) and f.dtype == np.uint8 for f in got)
    assert all(f.std() > 10 for f in got)  # videotestsrc's colour bars, not a blank frame


def test_gstreamer_pipeline_must_end_in_appsink(monkeypatch):
    monkeypatch.setattr(sources, "gstreamer_available", lambda: True)  # checked before OpenCV is asked
    with pytest.raises(SourceError, match=r"^a GStreamer pipeline for --source must end in appsink "
                                          r"\(e\.g\. '\.\.\. ! videoconvert ! appsink drop=true max-buffers=1'\)$"):
        sources.open_source("videotestsrc ! videoconvert ! fakesink")


@pytest.mark.skipif(not HAS_GSTREAMER, reason="this OpenCV has no GStreamer (pip's OpenCV): a pipeline cannot start")
def test_gstreamer_pipeline_that_does_not_start_is_a_clear_error():
    with pytest.raises(SourceError, match=r"^GStreamer pipeline did not start \(check it with gst-launch-1\.0"):
        sources.open_source("nosuchelement-edge-saliency ! videoconvert ! appsink")


@pytest.mark.skipif(HAS_GSTREAMER, reason="this OpenCV has GStreamer: the pipeline would run")
def test_run_with_a_pipeline_on_an_opencv_without_gstreamer_is_one_line(lite0_onnx, tmp_path):
    p = subprocess.run([sys.executable, "-m", "edge_saliency", "run", "--model", str(lite0_onnx), "--source",
                        TEST_PIPELINE, "--headless", "--max-frames", "2"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert lines == [f"edge-saliency: error: {NO_GSTREAMER}"], p.stderr


def test_image_folder_in_name_order_skipping_unreadable(tmp_path, caplog):
    for i, name in enumerate(["b.png", "a.jpg", "c.png"]):
        cv2.imwrite(str(tmp_path / name), np.full((20, 30, 3), 50 * (i + 1), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "readme.txt").write_text("ignored")
    src = sources.open_source(str(tmp_path))
    assert src.frame_count == 4
    got = []
    with pytest.raises(EndOfStream):  # a bare sentinel, raised without a message: its type is the signal
        while True:
            got.append(src.read())
    assert [int(round(g.mean())) for g in got] == [100, 50, 150]  # a.jpg, b.png, c.png
    assert "broken.png" in caplog.text


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        sources.open_source(str(tmp_path))


def test_demo_photographs_fill_the_frame_and_pan_and_zoom():
    src = sources.open_source("demo")
    assert src.live and src.paced
    fps = src.fps
    f0, f1 = src.read(), src.read()
    assert f0.shape == (480, 640, 3) and f0.dtype == np.uint8
    assert np.array_equal(f1, src.make(1)) and np.abs(f0.astype(int) - src.make(5)).mean() > 0.5  # moving
    # photographs fill the frame: no flat canvas anywhere (every 80x80 tile has texture)
    for i in range(0, int(fps * src.SECONDS_PER_SCENE * len(src.SCENES)), 15):
        f = src.make(i)
        tiles = f.reshape(6, 80, 8, 80, 3).std(axis=(1, 3, 4))
        assert tiles.min() > 2, (i, tiles.min())
    # each scene zooms in slowly and pans sideways, alternating direction
    per = int(fps * src.SECONDS_PER_SCENE)
    for n, scene in enumerate(src.SCENES):
        first, last = n * per, (n + 1) * per - 1
        assert src.scene(first)[0] == src.scene(last)[0] == scene
        zooms = [src.placement(i)[3] for i in range(first, last + 1)]
        assert zooms == sorted(zooms) and zooms[-1] > 1.15 * zooms[0]
        steps = np.abs(np.diff([src.make(i)[::8, ::8].astype(int) for i in (first, first + 15)], axis=0)).mean()
        assert steps < 40  # slow: half a second changes the frame only so much
    x = [src.placement(i)[1] for i in range(per, 2 * per)]  # the coffee scene
    assert x[-1] < x[0] - 40 and src.placement(0)[1] < src.placement(per - 1)[1]
    assert src.placement(int(fps * 2.5))[0] == "coffee"


def test_demo_has_a_scene_where_two_objects_share_the_frame():
    src = sources.open_source("demo")
    pair = [i for i in range(int(src.fps * src.SECONDS_PER_SCENE * len(src.SCENES))) if len(src.objects(i)) == 2]
    assert len(pair) >= src.fps  # a second or more
    (a, box_a), (b, box_b) = src.objects(pair[0])
    assert {a, b} == {"chelsea", "coffee"} and box_a[2] <= box_b[0]  # side by side
    f = src.make(pair[0])
    # each half really shows its photo: the halves differ in colour (the red cup, the grey-brown cat)
    left, right = f[:, :320].reshape(-1, 3).mean(axis=0), f[:, 320:].reshape(-1, 3).mean(axis=0)
    assert right[2] - right[0] > left[2] - left[0] + 20


def test_synthetic_source_stamps_frame_numbers():
    src = sources.open_source("synthetic")
    for i in range(5):
        assert sources.read_stamp(src.read()) == i
    img = np.zeros((40, 600, 3), np.uint8)
    for v in (0, 1, 12345, 2**31 + 7):
        sources.stamp(img, v)
        assert sources.read_stamp(img) == v


def test_in_the_shared_scene_class_specific_maps_pick_one_object_and_smoe_both(lite0_model):
    src = sources.open_source("demo")
    per = int(src.fps * src.SECONDS_PER_SCENE)
    start = src.SCENES.index("chelsea+coffee") * per
    checked = 0
    for i in range(start + 3, start + per, 12):
        r = lite0_model.predict(src.make(i))
        if r.label not in ("Egyptian cat", "tiger cat", "tabby", "espresso", "cup", "coffee mug"):
            continue
        cat_side = r.label in ("Egyptian cat", "tiger cat", "tabby")

        def left_share(m):  # at frame size: the halves are the two photos
            m = cv2.resize(np.asarray(m, np.float32), (640, 480), interpolation=cv2.INTER_LINEAR).astype(np.float64)
            return m[:, :320].sum() / m.sum()

        smoe = left_share(r.map("smoe"))
        recipro = left_share(r.map("recipro"))
        assert 0.35 < smoe < 0.65, (i, r.label, smoe)  # class-agnostic: both halves
        assert (recipro > 0.7) if cat_side else (recipro < 0.3), (i, r.label, recipro)  # the top class's half
        checked += 1
    assert checked >= 3

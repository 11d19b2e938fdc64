"""Sources: parsing --source, video files, image folders, demo and stamped synthetic frames."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_saliency import sources
from edge_saliency.sources import EndOfStream, SourceError


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
    with pytest.raises(SourceError) as e:
        sources.make_source(text)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_video_file_reads_every_frame_then_ends(tmp_path):
    frames = [np.full((48, 64, 3), 10 * i, np.uint8) for i in range(12)]
    src = sources.make_source(str(write_video(tmp_path / "v.mp4", frames, fps=25)))
    src.open()
    assert src.fps == pytest.approx(25)
    assert src.frame_count == 12
    got = []
    with pytest.raises(EndOfStream):
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


def test_gstreamer_pipeline_without_gstreamer_or_appsink_is_a_clear_error():
    with pytest.raises(SourceError) as e:
        sources.open_source("videotestsrc ! videoconvert ! appsink drop=true max-buffers=1")
    assert "GStreamer" in str(e.value)
    if sources.gstreamer_available():
        with pytest.raises(SourceError, match="appsink"):
            sources.open_source("videotestsrc ! videoconvert ! fakesink")


def test_image_folder_in_name_order_skipping_unreadable(tmp_path, caplog):
    for i, name in enumerate(["b.png", "a.jpg", "c.png"]):
        cv2.imwrite(str(tmp_path / name), np.full((20, 30, 3), 50 * (i + 1), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "readme.txt").write_text("ignored")
    src = sources.open_source(str(tmp_path))
    assert src.frame_count == 4
    got = []
    with pytest.raises(EndOfStream):
        while True:
            got.append(src.read())
    assert [int(round(g.mean())) for g in got] == [100, 50, 150]  # a.jpg, b.png, c.png
    assert "broken.png" in caplog.text


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        sources.open_source(str(tmp_path))


def test_demo_moves_real_photographs():
    src = sources.open_source("demo")
    assert src.live and src.paced
    f0, f1 = src.read(), src.read()
    assert f0.shape == (480, 640, 3) and f0.dtype == np.uint8
    assert np.abs(f0.astype(int) - f1).mean() > 0.5  # moving
    name0, x0, _, _ = src.placement(0)
    name_later, x_later, _, _ = src.placement(20)
    assert name0 == name_later == "chelsea" and x_later > x0 + 40  # panned right
    assert src.placement(int(30 * 4.5))[0] == "coffee"  # next photo after 4 s
    # the photo is where placement says: the frame differs from the background around its centre
    name, cx, cy, _ = src.placement(0)
    assert np.abs(f0[int(cy) - 5:int(cy) + 5, int(cx) - 5:int(cx) + 5].astype(int) - src.background[int(cy), int(cx)]).mean() > 5


def test_synthetic_source_stamps_frame_numbers():
    src = sources.open_source("synthetic")
    for i in range(5):
        assert sources.read_stamp(src.read()) == i
    img = np.zeros((40, 600, 3), np.uint8)
    for v in (0, 1, 12345, 2**31 + 7):
        sources.stamp(img, v)
        assert sources.read_stamp(img) == v

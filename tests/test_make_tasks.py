"""make_tasks: frame selection, task splitting and URL building with exact values; the CLI on a real clip."""
import json
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from PIL import Image

from backend.ls.make_tasks import (MakeTasksError, build_tasks, check_decoded, effective_fps, frame_filename,
                                   local_files_url, main, relative_to_root, split_into_tasks, storage_covers, stride_for)
from tests.brokenvideo import damaged_mp4, decoded_count, truncated_avi
from tests.fakehttp import closed_port_url


# -- selection ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source_fps, kwargs, want", [
    (29.97, {}, 1),                       # default: every frame
    (29.97, {"stride": 10}, 10),
    (None, {"stride": 4}, 4),             # a stride needs no frame rate
    (29.97, {"fps": 10}, 3),              # 2.997 -> 3
    (29.97, {"fps": 6}, 5),               # 4.995 -> 5
    (5.0, {"fps": 2}, 3),                 # 2.5 -> 3: halves round up (Python's round() would give 2)
    (25.0, {"fps": 25}, 1),
    (25.0, {"fps": 60}, 1),               # above the source rate: every frame, never stride 0
])
def test_stride_for(source_fps, kwargs, want):
    assert stride_for(source_fps, **kwargs) == want


@pytest.mark.parametrize("source_fps, kwargs, needle", [
    (None, {"fps": 5}, "frame rate"),
    (0.0, {"fps": 5}, "frame rate"),
    (25.0, {"stride": 0}, "--stride"),
    (25.0, {"fps": -1.0}, "--fps"),
    (25.0, {"stride": 2, "fps": 5}, "mutually exclusive"),
])
def test_stride_for_rejects(source_fps, kwargs, needle):
    with pytest.raises(MakeTasksError, match=needle):
        stride_for(source_fps, **kwargs)


def test_effective_fps():
    assert effective_fps(29.97, 3) == pytest.approx(9.99)
    assert effective_fps(25.0, 1) == 25.0
    assert effective_fps(None, 3) is None
    assert effective_fps(0.0, 3) is None


def test_split_455_frames_into_tasks_of_200():
    chunks = split_into_tasks(455, 1, 200)
    assert [len(c) for c in chunks] == [200, 200, 55]
    assert [c.start for c in chunks] == [0, 200, 400]
    assert [c[-1] for c in chunks] == [199, 399, 454]
    assert [i for c in chunks for i in c] == list(range(455))  # consecutive, nothing lost or repeated


def test_split_with_stride_keeps_source_indices():
    # box.mp4 with --stride 5 --max-frames-per-task 40: 91 frames (0..450) -> 40/40/11
    chunks = split_into_tasks(455, 5, 40)
    assert [len(c) for c in chunks] == [40, 40, 11]
    assert [(c.start, c.step, c[-1]) for c in chunks] == [(0, 5, 195), (200, 5, 395), (400, 5, 450)]


@pytest.mark.parametrize("n, stride, per_task, lengths", [
    (0, 1, 200, []),
    (1, 10, 200, [1]),
    (200, 1, 200, [200]),
    (201, 1, 200, [200, 1]),
    (217, 10, 7, [7, 7, 7, 1]),
])
def test_split_edges(n, stride, per_task, lengths):
    assert [len(c) for c in split_into_tasks(n, stride, per_task)] == lengths


def test_split_rejects_zero():
    with pytest.raises(ValueError):
        split_into_tasks(10, 0, 5)
    with pytest.raises(ValueError):
        split_into_tasks(10, 1, 0)


# -- names, paths and URLs ---------------------------------------------------------------------------------------------
def test_frame_filename():
    assert frame_filename(0) == "00000.jpg"
    assert frame_filename(455) == "00455.jpg"
    assert frame_filename(123456) == "123456.jpg"  # wider than 5 digits is not truncated


def test_local_files_url_encodes_like_label_studio():
    rel = "my clips/vidé o#1&x+y?/00000.jpg"
    url = local_files_url(Path(rel))
    assert url == "/data/local-files/?d=my%20clips/vid%C3%A9%20o%231%26x%2By%3F/00000.jpg"
    assert url == "/data/local-files/?d=" + quote(rel)  # LS's LocalFilesImportStorage.get_data does exactly this
    # what LS (and backend.serving.media) decode from the query string is the original relative path
    assert parse_qs(urlsplit(url).query)["d"] == [rel]


def test_local_files_url_plain_and_leading_slash():
    assert local_files_url("frames/box/00005.jpg") == "/data/local-files/?d=frames/box/00005.jpg"
    assert local_files_url("/frames/box/00005.jpg") == "/data/local-files/?d=frames/box/00005.jpg"


def test_relative_to_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    assert relative_to_root(root / "frames" / "box", root) == Path("frames/box")
    assert relative_to_root(root / "a" / ".." / "b", root) == Path("b")
    assert relative_to_root(root, root, allow_root=True) == Path(".")
    with pytest.raises(MakeTasksError, match="not inside"):
        relative_to_root(root, root)
    with pytest.raises(MakeTasksError, match="not inside"):
        relative_to_root(root / ".." / "elsewhere", root)
    with pytest.raises(MakeTasksError, match="not inside"):
        relative_to_root(tmp_path / "media-other", root)  # a string prefix is not a parent
    (root / "link").symlink_to(tmp_path)  # a symlink leading out of the root is outside too
    with pytest.raises(MakeTasksError, match="not inside"):
        relative_to_root(root / "link" / "x", root)


def test_build_tasks_exact():
    chunks = split_into_tasks(12, 3, 2)  # frames 0,3 | 6,9
    tasks = build_tasks(chunks, Path("out/clip"), "s3://bucket/clip.mp4", 10.0)
    assert tasks == [
        {"data": {"frames": ["/data/local-files/?d=out/clip/00000.jpg", "/data/local-files/?d=out/clip/00003.jpg"],
                  "video": "s3://bucket/clip.mp4", "frame_start": 0, "frame_stride": 3, "fps": 10.0}},
        {"data": {"frames": ["/data/local-files/?d=out/clip/00006.jpg", "/data/local-files/?d=out/clip/00009.jpg"],
                  "video": "s3://bucket/clip.mp4", "frame_start": 6, "frame_stride": 3, "fps": 10.0}},
    ]


@pytest.mark.parametrize("storage, folder, want", [
    ("/m/frames", "/m/frames/box", True),
    ("/m/frames/", "/m/frames/box", True),
    ("/m/frames/box", "/m/frames/box", True),
    ("/m/fr", "/m/frames/box", False),            # string prefix, not a parent folder
    ("/m/frames/box/sub", "/m/frames/box", False),
    ("", "/m/frames/box", False),
])
def test_storage_covers(storage, folder, want):
    assert storage_covers(storage, Path(folder)) is want


# -- CLI on a real clip ------------------------------------------------------------------------------------------------
def _cli(tmp_path, video, *extra):
    root = tmp_path / "media"
    return root, ["--out-dir", str(root / "frames"), "--document-root", str(root), str(video), *extra]


def test_cli_cup_stride_10(tmp_path, clips_dir, capsys):
    root, argv = _cli(tmp_path, clips_dir / "cup.mp4", "--stride", "10", "--video-ref", "/data/upload/1/cup.mp4")
    assert main(argv) == 0
    tasks = json.loads(capsys.readouterr().out)

    jpegs = sorted((root / "frames" / "cup").iterdir())
    assert [p.name for p in jpegs] == [f"{i:05d}.jpg" for i in range(0, 217, 10)]  # 22 frames: 0..210
    for p in jpegs[:: 7]:
        with Image.open(p) as img:
            assert (img.format, img.size) == ("JPEG", (640, 480))

    assert len(tasks) == 1
    data = tasks[0]["data"]
    assert data["frames"] == [f"/data/local-files/?d=frames/cup/{i:05d}.jpg" for i in range(0, 217, 10)]
    assert (data["video"], data["frame_start"], data["frame_stride"]) == ("/data/upload/1/cup.mp4", 0, 10)
    assert data["fps"] == pytest.approx(2.68, abs=0.01)  # 26.8 fps / 10


def test_cli_splits_and_writes_tasks_json(tmp_path, clips_dir, capsys):
    out_json = tmp_path / "tasks.json"
    root, argv = _cli(tmp_path, clips_dir / "cup.mp4", "--stride", "10", "--max-frames-per-task", "7",
                      "--jpeg-quality", "50", "--tasks-json", str(out_json))
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["source_frames"], summary["frames"], summary["tasks"]) == (217, 22, 4)
    tasks = json.loads(out_json.read_text())
    assert [(t["data"]["frame_start"], len(t["data"]["frames"])) for t in tasks] == [(0, 7), (70, 7), (140, 7),
                                                                                     (210, 1)]
    assert tasks[0]["data"]["video"] == str((clips_dir / "cup.mp4").resolve())
    # a lower quality makes smaller files than the default 90
    small = (root / "frames" / "cup" / "00000.jpg").stat().st_size
    _, argv = _cli(tmp_path / "q90", clips_dir / "cup.mp4", "--stride", "100")
    assert main(argv) == 0
    assert small < (tmp_path / "q90" / "media" / "frames" / "cup" / "00000.jpg").stat().st_size


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("make_tasks: error:")]
    assert len(err) == 1, err
    return err[0]


def test_cli_missing_video(tmp_path, capsys):
    _, argv = _cli(tmp_path, tmp_path / "nope.mp4")
    assert main(argv) == 2
    assert "does not exist" in _error_line(capsys)


def test_cli_corrupt_video(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(bytes(range(256)) * 64)
    root, argv = _cli(tmp_path, bad)
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "cannot be opened" in line or "no decodable frames" in line
    assert not list((root / "frames").glob("bad/*.jpg"))


def test_cli_out_dir_outside_document_root(tmp_path, clips_dir, capsys):
    root = tmp_path / "media"
    root.mkdir()
    argv = ["--out-dir", str(tmp_path / "elsewhere"), "--document-root", str(root), str(clips_dir / "cup.mp4")]
    assert main(argv) == 2
    assert "not inside the Label Studio document root" in _error_line(capsys)
    assert not (tmp_path / "elsewhere").exists()  # checked before anything is decoded or written


def test_cli_stride_and_fps_are_exclusive(tmp_path, clips_dir):
    _, argv = _cli(tmp_path, clips_dir / "cup.mp4", "--stride", "2", "--fps", "5")
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_cli_unreachable_label_studio_fails_before_decoding(tmp_path, clips_dir, capsys):
    root, argv = _cli(tmp_path, clips_dir / "cup.mp4", "--project", "1", "--label-studio-url", closed_port_url(),
                      "--api-key", "0123456789abcdef0123456789abcdef01234567")
    assert main(argv) == 1
    assert "Could not reach Label Studio" in _error_line(capsys)
    assert not (root / "frames").exists()


def test_cli_project_needs_url_and_key(tmp_path, clips_dir, capsys, monkeypatch):
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    _, argv = _cli(tmp_path, clips_dir / "cup.mp4", "--project", "1")
    assert main(argv) == 2
    assert "--label-studio-url" in _error_line(capsys)


# -- frames the container declares but that do not decode (issue 9: silent frame loss) --------------------------------
@pytest.mark.parametrize("make_video", [truncated_avi, damaged_mp4], ids=["truncated-avi", "damaged-mp4"])
def test_cli_refuses_a_video_that_decodes_fewer_frames_than_it_declares(tmp_path, capsys, make_video):
    # before: exit 0 and a silent import of the frames that happened to decode
    video = make_video(tmp_path / f"clip{'.avi' if make_video is truncated_avi else '.mp4'}")
    n = decoded_count(video)
    declared = 444 if make_video is truncated_avi else 100
    root, argv = _cli(tmp_path, video, "--tasks-json", str(tmp_path / "tasks.json"))
    assert main(argv) == 2
    line = _error_line(capsys)
    assert f"declares {declared} frames but only {n} decode" in line and f"frame {n} is the first" in line
    assert "--allow-partial" in line
    assert not list((root / "frames").rglob("*.jpg")) and not (tmp_path / "tasks.json").exists()


def test_cli_allow_partial_imports_the_decodable_frames_and_still_says_so(tmp_path, capsys):
    video = truncated_avi(tmp_path / "clip.avi")
    n = decoded_count(video)
    root, argv = _cli(tmp_path, video, "--allow-partial")
    assert main(argv) == 0
    out = capsys.readouterr()
    tasks = json.loads(out.out)
    assert sum(len(t["data"]["frames"]) for t in tasks) == n
    assert f"declares 444 frames but only {n} decode" in out.err and "--allow-partial given" in out.err


@pytest.mark.parametrize("declared, decoded, allow, verdict", [
    (None, 50, False, None), (50, 50, False, None), (40, 50, False, None),   # unknown, exact, under-declared
    (456, 455, False, "warn"),                                                 # box.mp4: one trailing frame
    (444, 68, False, "error"), (444, 68, True, "warn"), (10, 8, False, "error"),
])
def test_check_decoded(declared, decoded, allow, verdict):
    if verdict == "error":
        with pytest.raises(MakeTasksError, match=f"declares {declared} frames but only {decoded} decode"):
            check_decoded(declared, decoded, "v.avi", allow_partial=allow)
    else:
        got = check_decoded(declared, decoded, "v.avi", allow_partial=allow)
        assert (got is not None) is (verdict == "warn")
        if got:
            assert f"frame {decoded} is the first" in got

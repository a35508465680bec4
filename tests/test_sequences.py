"""Which files ``maskfarm segment`` frame arguments name (``maskfarm.client.sequences``),
and which of them a run does (``maskfarm.client.sequence_run.plan_frames``)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from maskfarm.client.sequence_run import SequencePlan, SequenceReport, plan_frames
from maskfarm.client.sequences import (
    FramePattern,
    SequenceError,
    describe_frames,
    expand_frames,
    natural_key,
    parse_frames,
)


def touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def names(paths) -> list[str]:
    return [path.name for path in paths]


@pytest.mark.parametrize(
    "text, frames",
    [
        ("1001", [1001]),
        ("1001-1004", [1001, 1002, 1003, 1004]),
        ("1001-1010x3", [1001, 1004, 1007, 1010]),
        ("1001,1005,1010-1012", [1001, 1005, 1010, 1011, 1012]),
        ("5, 1-3, 2", [5, 1, 2, 3]),
        ("0-0", [0]),
    ],
)
def test_frame_lists(text, frames) -> None:
    assert parse_frames(text) == frames


@pytest.mark.parametrize(
    "text, says",
    [
        ("1100-1001", "ends before it starts"),
        ("1-10x0", "step of at least 1"),
        ("1-10x", "not a frame"),
        ("a-b", "not a frame"),
        ("1,,2", "not a frame"),
        ("-3", "not a frame"),
        ("", "not a frame"),
    ],
)
def test_bad_frame_lists_say_what_is_wrong(text, says) -> None:
    with pytest.raises(SequenceError, match="--frames") as raised:
        parse_frames(text)
    assert says in str(raised.value)


@pytest.mark.parametrize(
    "pattern, padding, frame, name",
    [
        ("shot.####.exr", 4, 42, "shot.0042.exr"),
        ("shot.####.exr", 4, 12345, "shot.12345.exr"),
        ("shot.#.exr", 1, 7, "shot.7.exr"),
        ("shot.@@@.exr", 3, 7, "shot.007.exr"),
        ("shot.%04d.exr", 4, 1001, "shot.1001.exr"),
        ("shot_%06d.png", 6, 1, "shot_000001.png"),
        ("shot.%d.png", 1, 10, "shot.10.png"),
    ],
)
def test_patterns_format_frames_with_their_padding(pattern, padding, frame, name) -> None:
    parsed = FramePattern.parse(f"plates/{pattern}")
    assert parsed.padding == padding
    assert parsed.path(frame) == Path("plates") / name


def test_a_name_without_a_frame_token_is_no_pattern() -> None:
    assert FramePattern.parse("shots/shot.1001.exr") is None
    assert FramePattern.parse("shots/shot.%4d.exr") is None  # space padding is no file name


def test_two_tokens_or_a_token_in_the_folder_are_refused() -> None:
    with pytest.raises(SequenceError, match="more than one frame token"):
        FramePattern.parse("shot.####.%04d.exr")
    with pytest.raises(SequenceError, match="in the file name"):
        FramePattern.parse("shots_####/shot.exr")


def test_a_pattern_without_frames_takes_exactly_the_frames_it_formats(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "shot.1001.exr",
        "shot.1003.exr",
        "shot.0999.exr",
        "shot.12345.exr",
        "shot.01002.exr",
        "shot.100.exr",
        "shot.1004.exr.tmp",
        "other.1002.exr",
    )
    (tmp_path / "shot.1005.exr").mkdir()
    expansion = expand_frames([str(tmp_path / "shot.####.exr")])
    assert names(expansion.paths) == ["shot.0999.exr", "shot.1001.exr", "shot.1003.exr", "shot.12345.exr"]
    assert expansion.missing == {}
    assert names(expand_frames([str(tmp_path / "shot.%05d.exr")]).paths) == ["shot.01002.exr", "shot.12345.exr"]
    assert names(expand_frames([str(tmp_path / "shot.#.exr")]).paths) == [
        "shot.100.exr",
        "shot.1001.exr",
        "shot.1003.exr",
        "shot.12345.exr",
    ]


def test_a_frame_list_names_its_frames_and_reports_the_missing_ones(tmp_path: Path) -> None:
    touch(tmp_path, *(f"shot.{n}.exr" for n in (1001, 1002, 1003, 1006, 1010)))
    expansion = expand_frames([str(tmp_path / "shot.%04d.exr")], parse_frames("1001-1007,1010"))
    assert names(expansion.paths) == [
        "shot.1001.exr",
        "shot.1002.exr",
        "shot.1003.exr",
        "shot.1006.exr",
        "shot.1010.exr",
    ]
    argument = str(tmp_path / "shot.%04d.exr")
    assert expansion.missing == {argument: [1004, 1005, 1007]}
    assert expansion.missing_count == 3
    assert expansion.describe_missing() == [f"{argument}: frames 1004-1005, 1007 missing"]


def test_globs_sort_naturally(tmp_path: Path) -> None:
    touch(tmp_path, "shot.10.png", "shot.2.png", "shot.1.png", "shot.100.png", "notes.txt")
    assert names(expand_frames([str(tmp_path / "shot.*.png")]).paths) == [
        "shot.1.png",
        "shot.2.png",
        "shot.10.png",
        "shot.100.png",
    ]
    assert sorted(["b10", "b9", "a10"], key=natural_key) == ["a10", "b9", "b10"]


def test_arguments_keep_their_order_and_a_file_named_twice_once(tmp_path: Path) -> None:
    touch(tmp_path, "b.png", "a.1.png", "a.2.png")
    expansion = expand_frames([str(tmp_path / "b.png"), str(tmp_path / "a.#.png"), str(tmp_path / "*.png")])
    assert names(expansion.paths) == ["b.png", "a.1.png", "a.2.png"]


def test_an_existing_file_is_itself_even_with_pattern_characters(tmp_path: Path) -> None:
    touch(tmp_path, "odd.####.png", "odd.0001.png")
    assert names(expand_frames([str(tmp_path / "odd.####.png")]).paths) == ["odd.####.png"]


@pytest.mark.parametrize(
    "argument, frames, says",
    [
        ("shot.####.exr", None, "no frames match"),
        ("shot.####.exr", "1-3", "none of frames 1-3 exist"),
        ("*.exr", None, "no files match"),
        ("shot.1001.exr", None, "no such file"),
        ("nowhere/shot.####.exr", None, "no such folder"),
    ],
)
def test_arguments_naming_nothing_are_errors(tmp_path: Path, argument, frames, says) -> None:
    touch(tmp_path, "shot.1001.png")
    with pytest.raises(SequenceError, match=says):
        expand_frames([str(tmp_path / argument)], parse_frames(frames) if frames else None)


def test_a_frame_list_needs_a_pattern(tmp_path: Path) -> None:
    touch(tmp_path, "shot.1001.png")
    with pytest.raises(SequenceError, match="--frames needs a frame pattern"):
        expand_frames([str(tmp_path / "shot.1001.png")], [1001])


def test_describe_frames() -> None:
    assert describe_frames([7, 1, 2, 3, 9, 10]) == "1-3, 7, 9-10"


def test_plan_skips_frames_whose_masks_all_exist(tmp_path: Path) -> None:
    touch(tmp_path / "in", *(f"shot.{n}.png" for n in range(1001, 1005)))
    out = tmp_path / "out"
    touch(out / "car", "shot.1001.png", "shot.1002.png", "shot.1003.png")
    touch(out / "sky", "shot.1001.png", "shot.1002.png")
    touch(out / "union", "shot.1001.png")
    pattern = str(tmp_path / "in" / "shot.####.png")

    plan = plan_frames([pattern], None, ["car", "sky"], out, "png")
    assert names(plan.frames) == ["shot.1003.png", "shot.1004.png"] and plan.skipped == 2 and plan.total == 4
    with_union = plan_frames([pattern], None, ["car", "sky"], out, "png", union=True)
    assert names(with_union.frames) == ["shot.1002.png", "shot.1003.png", "shot.1004.png"]
    assert plan_frames([pattern], None, ["car", "sky"], out, "npy").skipped == 0
    overwrite = plan_frames([pattern], None, ["car", "sky"], out, "png", overwrite=True)
    assert len(overwrite.frames) == 4 and overwrite.skipped == 0


def test_plan_refuses_missing_frames_unless_keep_going(tmp_path: Path) -> None:
    touch(tmp_path, "shot.1001.png", "shot.1003.png")
    pattern = str(tmp_path / "shot.####.png")
    with pytest.raises(SequenceError, match="frame 1002 missing.*--keep-going"):
        plan_frames([pattern], "1001-1003", ["car"], tmp_path / "out", "png")
    plan = plan_frames([pattern], "1001-1003", ["car"], tmp_path / "out", "png", keep_going=True)
    assert names(plan.frames) == ["shot.1001.png", "shot.1003.png"]
    assert (plan.missing_count, plan.total) == (1, 3)


def test_report_counts_skipped_and_failed_frames_and_exits_3_for_failures(tmp_path: Path) -> None:
    stream = io.StringIO()
    plan = SequencePlan(
        [Path("a.png"), Path("b.png")], skipped=1, missing=["s.####.png: frame 4 missing"], missing_count=1
    )
    report = SequenceReport(plan, "out", stream=stream)
    report.progress.advance()
    report.failed("b.png", "cannot decode")
    assert report.finish(1) == 3
    text = stream.getvalue()
    assert "1 of 4 frames skipped: their masks exist in out" in text
    assert "maskfarm segment: s.####.png: frame 4 missing; skipped" in text
    assert "maskfarm segment: b.png: failed, skipped: cannot decode" in text
    assert "4/4 frames done, 2 failed (1 skipped: masks exist)" in text
    assert text.splitlines()[-1] == (
        "maskfarm segment: 2 frames failed and were skipped: s.####.png: frame 4 missing, b.png"
    )

    clean = io.StringIO()
    ok = SequenceReport(SequencePlan([Path("a.png")]), "out", stream=clean)
    ok.progress.advance()
    assert ok.finish(2) == 0
    assert "1/1 frames succeeded" in clean.getvalue()

"""The VPP dataset on disk: parquet per episode + one mp4 per camera view, JSON metadata.

Layout (LeRobot-like; every file opens with pandas/pyarrow, a text editor or a video player)::

    <root>/meta/info.json        DatasetInfo: embodiment, action space, fps, horizon, image size,
                                 views, dimension names, counts, converter + video settings
    <root>/meta/episodes.jsonl   one EpisodeMeta per line (index, source bag, instruction,
                                 length, sync report)
    <root>/meta/rejected.jsonl   {"source", "reason"} per bag that was not converted
    <root>/meta/stats.json       normalisation statistics (PercentileNormalizer.to_dict() for
                                 "actions" and "proprio") + min/max/mean/std per key for humans
    <root>/data/episode_000000.parquet      one row per frame (see ``PARQUET_COLUMNS``)
    <root>/videos/<view>/episode_000000.mp4  frames at image_size x image_size

Why this format: a robotics user can inspect it without our code (``pd.read_parquet``, any video
player), it streams episode by episode (no monolithic archive to rewrite when a demonstration is
added, so conversion is resumable), images are compressed ~20-50x by a standard codec with
random access per episode, and it is close to LeRobot's v2 layout that many tools already read.
Zarr would need a reader library for images and gives no playable video; HDF5 is one file that a
crash can corrupt.

Videos: H.264 (libx264), ``yuv444p``, CRF ``VideoSettings.crf`` (12 by default), a keyframe every
``gop`` frames, one encoder thread and ffmpeg's bitexact flags so the same frames always give the
same bytes. Measured on frames of the simulated tabletop: 4:2:0 (``yuv420p``) cannot exceed
~35 dB PSNR even losslessly, with errors up to 158/255 on the cubes' colour edges (it halves the
colour resolution, and the tasks are about small coloured objects); 4:4:4 at CRF 12 gives 46.5 dB
(99.9th percentile error 8/255) at 3.5 KB per 256 px frame, and 39 dB at 24 KB with camera-like
noise (lossless CRF 0: 52 dB, 82 KB). Files play in ffplay/mpv/VLC/Chrome; Safari/QuickTime do
not play 4:4:4 H.264.

Atomicity and resume: an episode's files are written under temporary names and renamed into
place, and the episode becomes part of the dataset only when its line is appended to
``episodes.jsonl`` (the commit point). Opening a ``DatasetWriter`` on an existing dataset removes
files of uncommitted episodes and continues after the last committed one; ``finalize`` writes
the statistics (and ``add_episode`` deletes stale ones, so a dataset without ``stats.json`` is
visibly unfinished).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..model.normalization import PercentileNormalizer

__all__ = [
    "DATASET_FORMAT",
    "DATASET_VERSION",
    "DatasetError",
    "DatasetInfo",
    "EpisodeMeta",
    "Episode",
    "VideoSettings",
    "VPPDataset",
    "DatasetWriter",
    "episode_stem",
    "write_video",
    "read_video",
]

DATASET_FORMAT = "vpp-dataset"
DATASET_VERSION = 1
_TMP_PREFIX = ".tmp-"


class DatasetError(RuntimeError):
    """A dataset on disk is missing, unfinished, inconsistent, or incompatible with a writer."""


def episode_stem(index: int) -> str:
    """File stem of episode ``index``: ``episode_000042``."""
    return f"episode_{int(index):06d}"


# ------------------------------------------------------------------------------------------------
# Metadata records
# ------------------------------------------------------------------------------------------------

@dataclass
class VideoSettings:
    """How frames are encoded to mp4 (written to info.json under ``video``)."""

    codec: str = "libx264"
    pix_fmt: str = "yuv444p"
    crf: int = 12
    preset: str = "medium"
    #: Keyframe interval in frames (smaller = faster random access, larger files).
    gop: int = 10

    def ffmpeg_output_params(self) -> list[str]:
        return [
            "-preset", self.preset, "-crf", str(int(self.crf)), "-g", str(int(self.gop)),
            # Determinism: one encoder thread, no encoder/muxer version strings or dates.
            "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1",
            # ffmpeg's default RGB->YUV matrix for untagged input is BT.601; say so in the file.
            "-colorspace", "smpte170m", "-color_primaries", "smpte170m", "-color_trc", "smpte170m",
        ]


@dataclass
class DatasetInfo:
    """``meta/info.json``."""

    embodiment: str
    action_space: str
    fps: float
    action_horizon: int
    image_size: int
    state_names: list[str]
    action_names: list[str]
    proprio_names: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=lambda: ["static", "wrist"])
    episodes: int = 0
    frames: int = 0
    converter: dict[str, Any] = field(default_factory=dict)
    video: dict[str, Any] = field(default_factory=lambda: dataclasses.asdict(VideoSettings()))
    format: str = DATASET_FORMAT
    version: int = DATASET_VERSION

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def state_dim(self) -> int:
        return len(self.state_names)

    @property
    def proprio_dim(self) -> int:
        """0 when the embodiment records no proprio vector."""
        return len(self.proprio_names)

    def to_dict(self) -> dict[str, Any]:
        order = ("format", "version", "embodiment", "action_space", "fps", "action_horizon", "image_size",
                 "views", "state_names", "action_names", "proprio_names", "episodes", "frames", "converter",
                 "video")
        data = dataclasses.asdict(self)
        return {key: data[key] for key in order}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetInfo":
        if data.get("format") != DATASET_FORMAT:
            raise DatasetError(f"not a {DATASET_FORMAT} dataset (format {data.get('format')!r})")
        if data.get("version") != DATASET_VERSION:
            raise DatasetError(f"dataset version {data.get('version')!r} is not supported (this code reads {DATASET_VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DatasetError(f"info.json has unknown keys {unknown}")
        return cls(**{key: data[key] for key in data})

    def compatibility_key(self) -> dict[str, Any]:
        """Everything that must match to append episodes to an existing dataset."""
        data = self.to_dict()
        data.pop("episodes")
        data.pop("frames")
        return data


@dataclass
class EpisodeMeta:
    """One line of ``meta/episodes.jsonl``."""

    episode_index: int
    source: str
    instruction: str
    length: int
    sync: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EpisodeMeta":
        return cls(int(data["episode_index"]), str(data["source"]), str(data["instruction"]), int(data["length"]),
                   dict(data.get("sync") or {}))


@dataclass
class Episode:
    """One demonstration, time-aligned at the dataset's fps.

    ``frames[view]``: uint8 (T, S, S, 3); ``timestamps``: (T,) seconds from the episode start;
    ``state``: (T, Ds); ``ee_pose``: (T, 7) xyz + quaternion xyzw; ``proprio``: (T, P) or None;
    ``actions``: (T, H, A) float32, the chunk planned from each frame; ``stamp_ns``: (T,) absolute
    capture stamps (ROS time) when known.
    """

    frames: dict[str, np.ndarray]
    timestamps: np.ndarray
    state: np.ndarray
    ee_pose: np.ndarray
    proprio: Optional[np.ndarray]
    actions: np.ndarray
    instruction: str
    index: int = -1
    stamp_ns: Optional[np.ndarray] = None

    @property
    def length(self) -> int:
        return int(np.asarray(self.timestamps).shape[0])

    def validate(self, info: DatasetInfo) -> None:
        """Raise ``ValueError`` naming the first field that does not fit ``info``."""
        length = self.length
        if length < 1:
            raise ValueError("episode has no frames")
        size = info.image_size
        if sorted(self.frames) != sorted(info.views):
            raise ValueError(f"episode views {sorted(self.frames)} != dataset views {sorted(info.views)}")
        for view, frames in self.frames.items():
            if frames.dtype != np.uint8 or frames.shape != (length, size, size, 3):
                raise ValueError(f"frames[{view!r}] must be uint8 {(length, size, size, 3)}, got {frames.dtype} {frames.shape}")
        expected = {
            "state": (length, info.state_dim),
            "ee_pose": (length, 7),
            "actions": (length, info.action_horizon, info.action_dim),
        }
        if info.proprio_dim:
            expected["proprio"] = (length, info.proprio_dim)
        elif self.proprio is not None:
            raise ValueError("the dataset has no proprio_names but the episode has proprio")
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is None or np.shape(value) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {None if value is None else np.shape(value)}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} contains NaN or Inf")
        timestamps = np.asarray(self.timestamps, dtype=np.float64)
        if not np.all(np.isfinite(timestamps)) or np.any(np.diff(timestamps) <= 0):
            raise ValueError("timestamps must be finite and strictly increasing")
        if self.stamp_ns is not None and np.shape(self.stamp_ns) != (length,):
            raise ValueError(f"stamp_ns must have shape ({length},)")


# ------------------------------------------------------------------------------------------------
# Video and parquet I/O
# ------------------------------------------------------------------------------------------------

def write_video(path: Path | str, frames: np.ndarray, fps: float, settings: VideoSettings = VideoSettings()) -> None:
    """Encode uint8 (T, H, W, 3) RGB frames to ``path`` (deterministically, see ``VideoSettings``)."""
    import imageio_ffmpeg

    frames = np.ascontiguousarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), pix_fmt_in="rgb24", pix_fmt_out=settings.pix_fmt, fps=fps, quality=None,
        codec=settings.codec, macro_block_size=1, ffmpeg_log_level="error",
        output_params=settings.ffmpeg_output_params() + ["-f", "mp4"],
    )
    writer.send(None)
    try:
        for frame in frames:
            writer.send(frame)
    finally:
        writer.close()


def read_video(path: Path | str, expected_frames: Optional[int] = None) -> np.ndarray:
    """Decode an mp4 to uint8 (T, H, W, 3) RGB."""
    import imageio_ffmpeg

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"video {path} is missing")
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", input_params=["-threads", "1"])
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3) for chunk in reader]
    if not frames:
        raise DatasetError(f"video {path} has no frames")
    video = np.stack(frames)
    if expected_frames is not None and video.shape[0] != expected_frames:
        raise DatasetError(f"video {path} has {video.shape[0]} frames, the episode has {expected_frames}")
    return video


def _list_column(values: np.ndarray) -> pa.Array:
    """(T, D) -> list<float32> column."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    rows, width = values.shape
    offsets = pa.array(np.arange(rows + 1, dtype=np.int32) * width, type=pa.int32())
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=pa.float32()))


def _read_list_column(table: pa.Table, name: str, width: int) -> np.ndarray:
    column = table.column(name).combine_chunks()
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    rows = len(column)
    if flat.size != rows * width:
        raise DatasetError(f"column {name!r}: expected {width} values per row, got {flat.size / max(rows, 1):.2f}")
    return flat.reshape(rows, width).astype(np.float32, copy=False)


def _episode_table(episode: Episode, index: int, info: DatasetInfo) -> pa.Table:
    length = episode.length
    timestamps = np.asarray(episode.timestamps, dtype=np.float64)
    stamp_ns = (np.asarray(episode.stamp_ns, dtype=np.int64) if episode.stamp_ns is not None
                else np.round(timestamps * 1e9).astype(np.int64))
    columns: dict[str, pa.Array] = {
        "episode_index": pa.array(np.full(length, index, dtype=np.int64)),
        "frame_index": pa.array(np.arange(length, dtype=np.int64)),
        "timestamp": pa.array(timestamps),
        "stamp_ns": pa.array(stamp_ns),
        "observation.state": _list_column(np.asarray(episode.state)),
        "observation.ee_pose": _list_column(np.asarray(episode.ee_pose)),
    }
    if info.proprio_dim:
        columns["observation.proprio"] = _list_column(np.asarray(episode.proprio))
    columns["action"] = _list_column(np.asarray(episode.actions).reshape(length, -1))
    return pa.table(columns)


def _fsync_write(path: Path, text: str, append: bool = False) -> None:
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(_TMP_PREFIX + path.name)
    _fsync_write(tmp, json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _read_jsonl(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; ``repair``: drop a last line cut off by a crash (no newline)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if repair and text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
        _fsync_write(path, text)
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}:{number}: not valid JSON ({error})") from None
    return records


def _summary(values: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    flat = np.asarray(values, dtype=np.float64).reshape(-1, len(names))
    return {
        "names": list(names),
        "min": flat.min(axis=0).tolist(),
        "max": flat.max(axis=0).tolist(),
        "mean": flat.mean(axis=0).tolist(),
        "std": flat.std(axis=0).tolist(),
    }


# ------------------------------------------------------------------------------------------------
# Reader
# ------------------------------------------------------------------------------------------------

class VPPDataset:
    """Read access to a finalised dataset directory."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"{self.root} is not a VPP dataset (no meta/info.json)")
        self.info = DatasetInfo.from_dict(json.loads(info_path.read_text(encoding="utf-8")))
        self.episodes: list[EpisodeMeta] = [EpisodeMeta.from_dict(r) for r in _read_jsonl(self.root / "meta" / "episodes.jsonl")]
        self.rejected: list[dict[str, Any]] = _read_jsonl(self.root / "meta" / "rejected.jsonl")
        stats_path = self.root / "meta" / "stats.json"
        if not stats_path.is_file():
            raise DatasetError(
                f"{self.root} is not finalised (no meta/stats.json): the conversion was interrupted; "
                "run the converter again with the same --output to resume and finish it"
            )
        self.stats: dict[str, Any] = json.loads(stats_path.read_text(encoding="utf-8"))
        if len(self.episodes) != self.info.episodes:
            raise DatasetError(f"{self.root}: info.json counts {self.info.episodes} episodes, episodes.jsonl has {len(self.episodes)}")

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return sum(e.length for e in self.episodes)

    def normalizers(self) -> dict[str, PercentileNormalizer]:
        """``{"actions": ..., "proprio": ...}`` (proprio only when the dataset has it)."""
        if self.stats.get("actions") is None:
            raise DatasetError(f"{self.root} has no episodes, so no action statistics")
        result = {"actions": PercentileNormalizer.from_dict(self.stats["actions"])}
        if self.stats.get("proprio") is not None:
            result["proprio"] = PercentileNormalizer.from_dict(self.stats["proprio"])
        return result

    def video_path(self, view: str, index: int) -> Path:
        return self.root / "videos" / view / f"{episode_stem(index)}.mp4"

    def parquet_path(self, index: int) -> Path:
        return self.root / "data" / f"{episode_stem(index)}.parquet"

    def load_episode(self, i: int, views: Optional[Iterable[str]] = None, load_frames: bool = True) -> Episode:
        """Episode ``i`` with decoded frames (``views``: a subset of views; ``load_frames=False``: none)."""
        if not 0 <= i < len(self.episodes):
            raise IndexError(f"episode {i} out of range (dataset has {len(self.episodes)})")
        meta = self.episodes[i]
        info = self.info
        table = pq.read_table(self.parquet_path(meta.episode_index))
        if table.num_rows != meta.length:
            raise DatasetError(f"episode {i}: parquet has {table.num_rows} rows, episodes.jsonl says {meta.length}")
        selected = list(info.views if views is None else views)
        unknown = sorted(set(selected) - set(info.views))
        if unknown:
            raise ValueError(f"unknown views {unknown}; the dataset has {info.views}")
        frames = {view: read_video(self.video_path(view, meta.episode_index), meta.length)
                  for view in (selected if load_frames else [])}
        return Episode(
            frames=frames,
            timestamps=table.column("timestamp").to_numpy(),
            state=_read_list_column(table, "observation.state", info.state_dim),
            ee_pose=_read_list_column(table, "observation.ee_pose", 7),
            proprio=_read_list_column(table, "observation.proprio", info.proprio_dim) if info.proprio_dim else None,
            actions=_read_list_column(table, "action", info.action_horizon * info.action_dim).reshape(
                meta.length, info.action_horizon, info.action_dim),
            instruction=meta.instruction,
            index=meta.episode_index,
            stamp_ns=table.column("stamp_ns").to_numpy(),
        )


# ------------------------------------------------------------------------------------------------
# Writer
# ------------------------------------------------------------------------------------------------

class DatasetWriter:
    """Appends episodes to a dataset directory; resumes an unfinished one with the same settings.

    ``add_episode`` / ``add_rejected`` record results in call order (callers pass episodes in a
    deterministic order); ``finalize`` writes the statistics and the final counts.
    """

    def __init__(
        self,
        root: Path | str,
        info: DatasetInfo,
        video: Optional[VideoSettings] = None,
        lower_percentile: float = 1.0,
        upper_percentile: float = 99.0,
        overwrite: bool = False,
    ) -> None:
        self.root = Path(root)
        if video is None:
            video = VideoSettings(**info.video) if info.video else VideoSettings()
        self.video = video
        info = dataclasses.replace(info, video=dataclasses.asdict(self.video), episodes=0, frames=0)
        self.lower_percentile = lower_percentile
        self.upper_percentile = upper_percentile
        self.meta_dir = self.root / "meta"
        self.data_dir = self.root / "data"
        info_path = self.meta_dir / "info.json"
        if overwrite and self.root.exists():
            if info_path.is_file() or not any(self.root.iterdir()):
                shutil.rmtree(self.root)
            else:
                raise DatasetError(f"refusing to overwrite {self.root}: it is not a VPP dataset")
        if info_path.is_file():
            existing = DatasetInfo.from_dict(json.loads(info_path.read_text(encoding="utf-8")))
            old, new = existing.compatibility_key(), info.compatibility_key()
            differing = sorted(k for k in new if old.get(k) != new.get(k))
            if differing:
                details = "; ".join(f"{k}: dataset {old.get(k)!r}, now {new.get(k)!r}" for k in differing)
                raise DatasetError(
                    f"{self.root} was written with other settings ({details}); "
                    "use another output directory or overwrite it"
                )
        elif self.root.exists() and any(self.root.iterdir()):
            raise DatasetError(f"{self.root} exists, is not empty and is not a VPP dataset")
        self.info = info
        for view in info.views:
            (self.root / "videos" / view).mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        if not info_path.is_file():
            _atomic_write_json(info_path, info.to_dict())
        self.episodes = [EpisodeMeta.from_dict(r) for r in _read_jsonl(self.meta_dir / "episodes.jsonl", repair=True)]
        self.rejected = _read_jsonl(self.meta_dir / "rejected.jsonl", repair=True)
        for position, meta in enumerate(self.episodes):
            if meta.episode_index != position:
                raise DatasetError(f"{self.meta_dir / 'episodes.jsonl'}: line {position + 1} has episode_index {meta.episode_index}")
        self._remove_uncommitted()

    # -------------------------------------------------------------- bookkeeping
    @property
    def done_sources(self) -> set[str]:
        """Sources already converted or rejected (skipped when resuming)."""
        return {e.source for e in self.episodes} | {str(r["source"]) for r in self.rejected}

    def _episode_files(self, index: int) -> list[Path]:
        stem = episode_stem(index)
        return [self.root / "videos" / view / f"{stem}.mp4" for view in self.info.views] + [self.data_dir / f"{stem}.parquet"]

    def _remove_uncommitted(self) -> None:
        committed = {episode_stem(e.episode_index) for e in self.episodes}
        folders = [self.data_dir] + [self.root / "videos" / view for view in self.info.views] + [self.meta_dir]
        for folder in folders:
            for path in sorted(folder.iterdir()):
                if path.name.startswith(_TMP_PREFIX) or (path.name.startswith("episode_") and path.stem not in committed):
                    path.unlink()

    # -------------------------------------------------------------- writing
    def add_episode(self, episode: Episode, source: str, sync_report: Mapping[str, Any]) -> EpisodeMeta:
        """Write ``episode`` as the next episode; returns its metadata (the commit is the jsonl line)."""
        episode.validate(self.info)
        index = len(self.episodes)
        files = self._episode_files(index)
        temporaries = [path.with_name(_TMP_PREFIX + path.name) for path in files]
        try:
            for view, tmp in zip(self.info.views, temporaries):
                write_video(tmp, episode.frames[view], self.info.fps, self.video)
            pq.write_table(_episode_table(episode, index, self.info), temporaries[-1], compression="zstd")
            for tmp, final in zip(temporaries, files):
                os.replace(tmp, final)
        except BaseException:
            for path in temporaries + files:
                path.unlink(missing_ok=True)
            raise
        meta = EpisodeMeta(index, str(source), episode.instruction, episode.length, json.loads(json.dumps(dict(sync_report))))
        (self.meta_dir / "stats.json").unlink(missing_ok=True)
        _fsync_write(self.meta_dir / "episodes.jsonl", json.dumps(meta.to_dict()) + "\n", append=True)
        self.episodes.append(meta)
        return meta

    def add_rejected(self, source: str, reason: str) -> None:
        record = {"source": str(source), "reason": str(reason)}
        _fsync_write(self.meta_dir / "rejected.jsonl", json.dumps(record) + "\n", append=True)
        self.rejected.append(record)

    def finalize(self) -> dict[str, Any]:
        """Fit normalisers over every committed episode, write stats.json and the final info.json."""
        reader_info = self.info
        actions, proprio, state, ee_pose = [], [], [], []
        for meta in self.episodes:
            table = pq.read_table(self.data_dir / f"{episode_stem(meta.episode_index)}.parquet")
            actions.append(_read_list_column(table, "action", reader_info.action_horizon * reader_info.action_dim))
            state.append(_read_list_column(table, "observation.state", reader_info.state_dim))
            ee_pose.append(_read_list_column(table, "observation.ee_pose", 7))
            if reader_info.proprio_dim:
                proprio.append(_read_list_column(table, "observation.proprio", reader_info.proprio_dim))
        stats: dict[str, Any] = {"actions": None, "proprio": None, "summary": {}}
        if actions:
            action_steps = np.concatenate(actions).reshape(-1, reader_info.action_dim)
            stats["actions"] = PercentileNormalizer.fit(action_steps, self.lower_percentile, self.upper_percentile).to_dict()
            summary = {"action": _summary(action_steps, reader_info.action_names),
                       "observation.state": _summary(np.concatenate(state), reader_info.state_names),
                       "observation.ee_pose": _summary(np.concatenate(ee_pose), ["x", "y", "z", "qx", "qy", "qz", "qw"])}
            if proprio:
                proprio_rows = np.concatenate(proprio)
                stats["proprio"] = PercentileNormalizer.fit(proprio_rows, self.lower_percentile, self.upper_percentile).to_dict()
                summary["observation.proprio"] = _summary(proprio_rows, reader_info.proprio_names)
            stats["summary"] = summary
        self.info = dataclasses.replace(self.info, episodes=len(self.episodes), frames=sum(e.length for e in self.episodes))
        _atomic_write_json(self.meta_dir / "info.json", self.info.to_dict())
        _atomic_write_json(self.meta_dir / "stats.json", stats)
        return stats

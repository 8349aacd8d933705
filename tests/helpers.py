"""Helpers shared by the tests: reading back what a run wrote."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar in a run folder's own TensorBoard event files, by tag."""
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {tag: [event.value for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def scalar_steps(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every event of one scalar tag in a run folder's own event files."""
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def hparams_sessions(run_dir: Path) -> list[dict]:
    """The hparams plugin's session-start records in a run folder's own event files."""
    sessions = []
    for events in run_dir.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        sessions.append({k: v for k, v in data.session_start_info.hparams.items()})
    return sessions

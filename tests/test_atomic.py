"""atomic_path: the real name holds either the old file or the complete new one."""

from pathlib import Path

import pytest

from fmnist_pl.atomic import atomic_path


def test_success_renames_and_failure_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "report.md"
    with atomic_path(target) as tmp:
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half of the sec")
        raise RuntimeError("killed while writing")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.md"]

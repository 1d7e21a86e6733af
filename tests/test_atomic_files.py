"""``adamergex_pl.atomic_files``: a repair removes only what dead writers left behind."""

from __future__ import annotations

import os
import subprocess
import sys

from adamergex_pl.atomic_files import finish_interrupted_writes, publish_dir, staging_dir


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_a_repair_leaves_a_live_writers_staging_alone(tmp_path):
    mine = staging_dir(tmp_path / "out")  # this process is alive: as a concurrent writer's staging is
    (mine / "adapter_config.json").write_text("{}")
    owner = mine.name[len(".tmp-out-") : -len("-abcd1234")]
    assert owner == f"{os.getpid()}@{owner.split('@')[1]}"
    host = owner.split("@")[1]
    live_file = tmp_path / f".tmp-out.{owner}.abcd1234"  # a write_atomic temporary file of this process
    live_file.write_text("half")
    other_host = tmp_path / ".tmp-out-1@elsewhere-abcd1234"  # a shared file system: cannot tell, keep it
    other_host.mkdir()
    dead = [
        tmp_path / f".tmp-out-{_dead_pid()}@{host}-abcd1234",  # a killed writer's staging folder
        tmp_path / f".tmp-out.{_dead_pid()}@{host}.abcd1234",  # and temporary file
        tmp_path / ".tmp-out-abcd1234",  # written before staging names carried their writer
    ]
    dead[0].mkdir(), dead[1].write_text("half"), dead[2].mkdir()
    assert sorted(finish_interrupted_writes(tmp_path, "out")) == sorted(f"removed {p.name}" for p in dead)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted([mine.name, live_file.name, other_host.name])
    assert finish_interrupted_writes(tmp_path) == []  # the repair of a whole folder keeps them too
    assert (mine / "adapter_config.json").read_text() == "{}"
    publish_dir(mine, tmp_path / "out")  # and the live writer finishes its write
    assert (tmp_path / "out/adapter_config.json").read_text() == "{}"

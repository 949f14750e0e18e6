"""walheader against WAL that the installed PostgreSQL 15 wrote, and walbucket's round trip checked by pg_waldump."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab_pg import PgCluster, PgLab, walbucket_executable
from lab_s3 import MotoServer
from walbucket.core.walheader import PAGE_MAGIC, parse_long_header, read_control_system_id, read_wal_header
from walbucket.core.walname import parse_wal_name

pytestmark = pytest.mark.postgres

PG15_MAGIC = 0xD110
FIRST_SEGMENT = "000000010000000000000001"


@pytest.fixture(scope="module")
def lab() -> Iterator[PgLab]:
    with PgLab() as lab:
        yield lab


@pytest.fixture(scope="module")
def cluster(lab: PgLab) -> Iterator[PgCluster]:
    node = lab.cluster("wal16").init().start()
    try:
        yield node
    finally:
        node.stop("immediate")


@pytest.fixture(scope="module")
def segments(cluster: PgCluster) -> list[str]:
    """Names of three complete segments in pg_wal (initdb's first one among them), ended by pg_switch_wal.

    Read while the server runs: the shutdown checkpoint would recycle them under other names.
    """
    cluster.psql("CREATE TABLE filler (id int, payload text)")
    names = []
    for round_ in range(3):
        cluster.psql(f"INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 20000) g -- {round_}")
        names.append(cluster.switch_wal())
    assert names[0] == FIRST_SEGMENT and len(set(names)) == 3, names
    return names


def test_the_installed_server_is_postgresql_15(lab: PgLab) -> None:
    assert "(PostgreSQL) 15." in lab.server_version()


def test_page_magic_of_real_pg15_wal_is_the_table_entry_for_15(cluster: PgCluster, segments: list[str]) -> None:
    for name in segments:
        header = read_wal_header(cluster.wal_dir / name)
        assert header.magic == PG15_MAGIC, f"{name}: magic 0x{header.magic:04X}"
        assert header.pg_version == 15
    assert PAGE_MAGIC[PG15_MAGIC] == 15


def test_real_headers_agree_with_pg_controldata(cluster: PgCluster, segments: list[str]) -> None:
    control = cluster.controldata()
    system_id = int(control["Database system identifier"])
    assert read_control_system_id(cluster.data_dir) == system_id
    for name in segments:
        path = cluster.wal_dir / name
        header = parse_long_header(path.read_bytes()[:4096])
        wal = parse_wal_name(name)
        assert wal is not None and wal.segment is not None
        assert header.system_id == system_id
        assert header.seg_size == int(control["Bytes per WAL segment"]) == path.stat().st_size == 16 << 20
        assert header.block_size == int(control["WAL block size"]) == 8192
        assert header.timeline == 1
        assert header.page_lsn == wal.segment.start_lsn(header.seg_size)


def test_64mib_segments_from_initdb_wal_segsize_parse_with_their_size(lab: PgLab) -> None:
    node = lab.cluster("wal64").init(wal_segsize_mb=64)
    path = node.wal_dir / FIRST_SEGMENT
    header = read_wal_header(path)
    control = node.controldata()
    assert header.seg_size == 64 << 20 == path.stat().st_size == int(control["Bytes per WAL segment"])
    assert header.system_id == int(control["Database system identifier"]) == read_control_system_id(node.data_dir)
    assert (header.pg_version, header.page_lsn, header.timeline) == (15, 1 * (64 << 20), 1)


def test_segment_restored_by_walbucket_get_is_byte_identical_and_pg_waldump_reads_it(
    lab: PgLab, cluster: PgCluster, segments: list[str], moto_server: MotoServer, bucket: str
) -> None:
    name = segments[-1]
    original = cluster.wal_dir / name
    env = moto_server.env(bucket, prefix="real-wal")
    wb = walbucket_executable()
    # As PostgreSQL runs them: as the server user, in the data directory, with its environment.
    pushed = lab.run([wb, "push", original], cwd=cluster.data_dir, env=env)
    assert f"walbucket push {name}: archived 16.0 MiB as " in pushed.stderr
    restored_dir = lab.make_dir(lab.base_dir / "restored")
    restored = restored_dir / name
    got = lab.run([wb, "get", name, restored], cwd=cluster.data_dir, env=env)
    assert f"walbucket get {name}: restored 16.0 MiB from " in got.stderr
    assert restored.read_bytes() == original.read_bytes()

    dump_restored = lab.pg("pg_waldump", "-p", restored_dir, name, name).stdout
    dump_original = lab.pg("pg_waldump", "-p", cluster.wal_dir, name, name).stdout
    assert dump_restored == dump_original
    assert "desc: SWITCH" in dump_restored.splitlines()[-1]
    assert "rmgr: Heap" in dump_restored


def test_pg_waldump_is_the_installed_15(lab: PgLab) -> None:
    assert "(PostgreSQL) 15." in lab.pg("pg_waldump", "--version").stdout

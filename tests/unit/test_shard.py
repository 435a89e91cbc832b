"""Sharding (auditor.shard): parsing --shard K/N, the stable split by tenant id, the part manifest, and
merging partial runs back into one, including every way a set of parts can fail to make one run."""

from __future__ import annotations

import io
import json
import random
import re
import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from auditor.cli.main import app as main_app
from auditor.config import AuditConfig, load_config, select_tenants
from auditor.constants import ExitCode
from auditor.errors import AuditorError, UsageError
from auditor.model import Billing, RunMode, RunResult, Status, TenantResult
from auditor.reporting import write_reports
from auditor.reporting.json_report import read_run
from auditor.shard import (
    PART_MANIFEST_FILENAME,
    MergeOptions,
    Shard,
    ShardError,
    ShardManifest,
    ShardPart,
    check_parts_against_config,
    config_fingerprint,
    merge_parts,
    merge_reports,
    merged_run_id,
    parse_shard,
    part_manifest,
    read_part,
    shard_of,
    write_part_manifest,
)

CLIENT = "00000000-0000-0000-0000-0000000000c1"
T0 = datetime(2025, 3, 1, 1, 30, tzinfo=UTC)


def tenant_ids(n: int, seed: str = "fleet") -> list[str]:
    """``n`` distinct, reproducible GUID-shaped tenant ids."""
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"{seed}/{i}")) for i in range(n)]


def config_text(ids: list[str], *, price: float = 2.5, app_id: str = "", extra: str = "") -> str:
    lines = [
        "[vendor]",
        f'app_id = "{app_id}"',
        "[billing]",
        f"price_per_mailbox = {price}",
        "[auth]",
        f'client_id = "{CLIENT}"',
        'client_secret_env = "AUDITOR_TEST_SECRET"',
        extra,
    ]
    for i, tenant_id in enumerate(ids):
        lines += ["[[tenants]]", f'name = "Tenant {i:04d}"', f'tenant_id = "{tenant_id}"', 'tags = ["all"]']
    return "\n".join(lines) + "\n"


def make_config(tmp_path: Path, ids: list[str], name: str = "audit.toml", **kwargs: Any) -> AuditConfig:
    """Write a config for ``ids`` (in that order) and load it."""
    path = tmp_path / name
    path.write_text(config_text(ids, **kwargs))
    return load_config(path)


def result_for(tenant_id: str, name: str, status: Status = Status.COMPLIANT) -> TenantResult:
    billed = 3 if status is Status.NON_COMPLIANT else 0
    cost = None if status is Status.ERROR else billed * 2.5
    return TenantResult(
        name=name,
        tenant_id=tenant_id,
        status=status,
        billing=Billing(None if status is Status.ERROR else billed, 2.5, cost, "GBP"),
    )


def status_of(tenant_id: str) -> Status:
    # A fixed mix of verdicts, so merged exit codes have something to say.
    return [Status.COMPLIANT, Status.NON_COMPLIANT, Status.NOT_CONNECTED][int(tenant_id[:2], 16) % 3]


def part_for(
    config: AuditConfig, shard: Shard, *, started: datetime = T0, label: str | None = None, **run_fields: Any
) -> ShardPart:
    """What `auditor audit --shard` would produce for ``shard`` of the whole config (fake verdicts)."""
    selected = select_tenants(config)
    tenants = shard.select(selected)
    run = RunResult(
        run_id=str(uuid.uuid4()),
        started_at=started + timedelta(seconds=shard.index),
        finished_at=started + timedelta(minutes=10 + shard.index),
        tool_version="0.1.0",
        mode=RunMode.AUDIT,
        tenants=tuple(result_for(t.tenant_id, t.name, status_of(t.tenant_id)) for t in tenants),
        currency="GBP",
    )
    run = replace(run, **run_fields)
    manifest = part_manifest(shard, run, config, selected)
    return ShardPart(label=label or f"shard-{shard.index}", run=run, manifest=manifest)


def all_parts(config: AuditConfig, count: int) -> list[ShardPart]:
    return [part_for(config, Shard(k, count)) for k in range(1, count + 1)]


# --- --shard K/N --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/1", Shard(1, 1)), ("2/3", Shard(2, 3)), (" 3 / 3 ", Shard(3, 3)), ("10/12", Shard(10, 12))],
)
def test_parse_shard_accepts_k_of_n(text: str, expected: Shard) -> None:
    shard = parse_shard(text)
    assert shard == expected
    assert parse_shard(str(shard)) == shard


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "expected K/N"),
        ("3", "expected K/N"),
        ("a/b", "expected K/N"),
        ("-1/3", "expected K/N"),
        ("1.5/3", "expected K/N"),
        ("1/3/5", "expected K/N"),
        ("２/3", "expected K/N"),  # a full-width digit: not silently accepted
        ("1/0", "N must be at least 1"),
        ("0/3", "K must be between 1 and 3 (shards are counted from 1)"),
        ("4/3", "K must be between 1 and 3"),
    ],
)
def test_parse_shard_refuses_bad_values_with_a_usage_error(text: str, fragment: str) -> None:
    with pytest.raises(ShardError) as caught:
        parse_shard(text)
    error = caught.value
    assert isinstance(error, UsageError)
    assert error.exit_code == ExitCode.USAGE
    assert fragment in str(error)
    assert "--shard K/N" in str(error) and "JOB_COMPLETION_INDEX+1" in str(error)  # how to fix it
    assert "\n" not in str(error)


@pytest.mark.parametrize(("index", "count"), [(0, 3), (4, 3), (1, 0), (-1, 2)])
def test_shard_refuses_impossible_values(index: int, count: int) -> None:
    with pytest.raises(ValueError, match="invalid shard"):
        Shard(index, count)


# --- assignment ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant_id", "expected"),
    [
        # Pinned: parts written by one host must be merged by another, so the split never changes silently.
        ("11111111-1111-1111-1111-111111111111", [1, 2, 3, 3]),
        ("22222222-2222-2222-2222-222222222222", [1, 2, 3, 7]),
        ("33333333-3333-3333-3333-333333333333", [1, 2, 3, 6]),
    ],
)
def test_assignment_is_pinned(tenant_id: str, expected: list[int]) -> None:
    assert [shard_of(tenant_id, n) for n in (1, 2, 3, 7)] == expected
    assert shard_of(tenant_id.upper(), 7) == shard_of(f"  {tenant_id} ", 7) == expected[-1]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 13])
def test_every_tenant_is_in_exactly_one_shard(count: int) -> None:
    ids = tenant_ids(1000)
    shards = [Shard(k, count) for k in range(1, count + 1)]
    holders = Counter(t.tenant_id for shard in shards for t in shard.select(_ids(ids)))
    assert set(holders) == set(ids)
    assert set(holders.values()) == {1}
    for tenant_id in ids:
        assert [s.index for s in shards if s.contains(tenant_id)] == [shard_of(tenant_id, count)]


@pytest.mark.parametrize("count", [2, 3, 5, 8])
def test_shards_are_balanced_for_1000_tenants(count: int) -> None:
    sizes = Counter(shard_of(t, count) for t in tenant_ids(1000))
    mean = 1000 / count
    assert set(sizes) == set(range(1, count + 1))
    # A uniform hash stays within about three standard deviations; 25 % leaves room for that.
    assert all(abs(n - mean) <= 0.25 * mean for n in sizes.values()), sizes


def test_assignment_ignores_order_and_other_tenants() -> None:
    ids = tenant_ids(300)
    before = {t: shard_of(t, 4) for t in ids}
    shuffled = ids[:]
    random.Random(5).shuffle(shuffled)
    grown = [*shuffled[:150], *tenant_ids(50, seed="new"), *shuffled[150:]]
    shard = Shard(2, 4)
    assert [t.tenant_id for t in shard.select(_ids(grown)) if t.tenant_id in before] == [
        t for t in grown if before.get(t) == 2
    ]
    # adding tenants moves no existing tenant
    assert all(shard_of(t, 4) == before[t] for t in ids)


def test_select_keeps_the_given_order() -> None:
    ids = tenant_ids(50)
    picked = Shard(1, 3).select(_ids(ids))
    assert [t.tenant_id for t in picked] == [t for t in ids if shard_of(t, 3) == 1]


# --- fingerprint and manifest --------------------------------------------------------------------------


def test_fingerprint_follows_what_is_audited_and_how_it_is_judged(tmp_path: Path) -> None:
    ids = tenant_ids(6)
    base = make_config(tmp_path, ids)
    fingerprint = config_fingerprint(base, select_tenants(base))
    assert fingerprint.startswith("sha256:")
    assert config_fingerprint(base, select_tenants(base)) == fingerprint
    # credentials and run limits may differ between hosts: same fingerprint
    same = make_config(tmp_path, ids, name="b.toml", extra="[run]\nconcurrency = 2")
    assert config_fingerprint(same, select_tenants(same)) == fingerprint
    different = {
        "price": make_config(tmp_path, ids, name="c.toml", price=3.0),
        "vendor": make_config(tmp_path, ids, name="d.toml", app_id=str(uuid.uuid4())),
        "order": make_config(tmp_path, list(reversed(ids)), name="e.toml"),
        "tenants": make_config(tmp_path, ids[:-1], name="f.toml"),
    }
    for what, config in different.items():
        assert config_fingerprint(config, select_tenants(config)) != fingerprint, what
    assert config_fingerprint(base, select_tenants(base, [ids[0]])) != fingerprint  # another selection


def test_manifest_round_trips(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(5))
    manifest = replace(all_parts(config, 2)[1].manifest, files={"audit.json": "sha256:" + "0" * 64})
    data = json.loads(json.dumps(manifest.to_dict()))
    assert data["shard"] == "2/2" and data["kind"] == "uss-auditor.shard-part"
    assert ShardManifest.from_dict(data) == manifest
    assert list(manifest.tenant_ids) == [t.tenant_id for t in config.tenants]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"kind": "something"}, "not a shard manifest"),
        ({"version": 99}, "unsupported shard manifest version"),
        ({"shard": "two of three"}, "is not K/N"),
        ({"tenant_ids": "all"}, "tenant_ids must be a list"),
        ({"run_id": ""}, "run_id and fingerprint"),
    ],
)
def test_manifest_from_dict_names_what_is_wrong(
    tmp_path: Path, change: dict[str, Any], fragment: str
) -> None:
    config = make_config(tmp_path, tenant_ids(3))
    data = {**all_parts(config, 1)[0].manifest.to_dict(), **change}
    with pytest.raises(ValueError, match=fragment):
        ShardManifest.from_dict(data)


# --- merge -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_merge_restores_the_unsharded_run(tmp_path: Path, count: int) -> None:
    config = make_config(tmp_path, tenant_ids(40))
    parts = all_parts(config, count)
    merged = merge_parts(list(reversed(parts)))
    assert [r.tenant_id for r in merged.tenants] == [t.tenant_id for t in config.tenants]  # config order
    assert [r.to_dict() for r in merged.tenants] == [
        result_for(t.tenant_id, t.name, status_of(t.tenant_id)).to_dict() for t in config.tenants
    ]
    assert merged.started_at == min(p.run.started_at for p in parts)
    assert merged.finished_at == max(p.run.finished_at for p in parts)
    assert (merged.mode, merged.tool_version, merged.currency) == (RunMode.AUDIT, "0.1.0", "GBP")
    assert merged.summary().tenants == 40
    # the same parts, in any order, give the same run id; other parts another
    assert merged.run_id == merged_run_id(parts) == merge_parts(parts).run_id
    assert merged.run_id != merge_parts(all_parts(config, count)).run_id
    uuid.UUID(merged.run_id)


def test_shards_without_tenants_still_merge(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(2))
    parts = all_parts(config, 9)
    assert sum(1 for p in parts if not p.run.tenants) >= 7
    assert len(merge_parts(parts).tenants) == 2


def _refusals(config: AuditConfig, other: AuditConfig) -> dict[str, tuple[list[ShardPart], str]]:
    one, two, three = all_parts(config, 3)
    foreign = next(t for t in config.tenants if shard_of(t.tenant_id, 3) != 1)
    stray_run = replace(one.run, tenants=(*one.run.tenants, result_for(foreign.tenant_id, foreign.name)))
    short_run = replace(one.run, tenants=one.run.tenants[1:])
    double_run = replace(one.run, tenants=(*one.run.tenants, one.run.tenants[0]))
    return {
        "nothing": ([], "no parts to merge"),
        "missing": ([one, three], "missing shard 2/3: a merge needs all 3 parts (got 1/3, 3/3)"),
        "duplicate": ([one, two, replace(two, label="copy-of-2"), three], "shard 2/3 given twice"),
        "split": ([one, two, three, part_for(config, Shard(4, 4))], "come from different splits"),
        "config": (
            [one, two, part_for(other, Shard(3, 3), label="other")],
            "audited different configs or tenant selections",
        ),
        "selection": (
            [
                one,
                two,
                replace(three, manifest=replace(three.manifest, tenant_ids=three.manifest.tenant_ids[1:])),
            ],
            "audited different configs or tenant selections",
        ),
        "run id": (
            [one, two, replace(three, manifest=replace(three.manifest, run_id="another-run"))],
            "shard.json belongs to run another-run",
        ),
        "mode": ([one, two, part_for(config, Shard(3, 3), mode=RunMode.DRY_RUN)], "different modes"),
        "version": (
            [one, two, part_for(config, Shard(3, 3), tool_version="0.2.0")],
            "different auditor versions",
        ),
        "stale": (
            [one, two, part_for(config, Shard(3, 3), started=T0 - timedelta(days=1))],
            "started 24.0 h apart",
        ),
        "foreign tenant": ([replace(one, run=stray_run), two, three], "which belongs to another shard"),
        "lacking tenant": ([replace(one, run=short_run), two, three], "the part is incomplete"),
        "twice in a part": ([replace(one, run=double_run), two, three], "more than once"),
    }


REFUSALS = [
    "nothing",
    "missing",
    "duplicate",
    "split",
    "config",
    "selection",
    "run id",
    "mode",
    "version",
    "stale",
    "foreign tenant",
    "lacking tenant",
    "twice in a part",
]


@pytest.mark.parametrize("case", REFUSALS)
def test_merge_refuses_parts_that_do_not_make_one_run(tmp_path: Path, case: str) -> None:
    config = make_config(tmp_path, tenant_ids(30))
    other = make_config(tmp_path, tenant_ids(30), name="other.toml", price=9.0)
    refusals = _refusals(config, other)
    assert sorted(refusals) == sorted(REFUSALS)
    parts, fragment = refusals[case]
    with pytest.raises(ShardError) as caught:
        merge_parts(parts)
    assert fragment in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.hint  # every refusal says what to do


def test_the_staleness_check_can_be_relaxed_or_turned_off(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(12))
    one, two, _ = all_parts(config, 3)
    late = part_for(config, Shard(3, 3), started=T0 + timedelta(hours=20))
    with pytest.raises(ShardError, match="apart"):
        merge_parts([one, two, late])
    assert len(merge_parts([one, two, late], max_start_spread=timedelta(hours=21)).tenants) == 12
    assert len(merge_parts([one, two, late], max_start_spread=None).tenants) == 12


def test_a_long_list_of_tenants_is_abbreviated(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(60))
    one, two = all_parts(config, 2)
    with pytest.raises(ShardError, match=r"and \d+ more of its shard"):
        merge_parts([replace(one, run=replace(one.run, tenants=())), two])


# --- files and the merge command -----------------------------------------------------------------------


def write_part(directory: Path, part: ShardPart, journal: str | None = None) -> Path:
    """What `auditor audit --shard` leaves in its --out: the reports and the journal, then shard.json
    (which records their digests)."""
    write_reports(part.run, directory, ["json"])
    if journal is not None:
        (directory / "remediation.jsonl").write_text(journal)
    write_part_manifest(directory, part.manifest)
    return directory


def test_a_part_round_trips_through_its_directory(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(8))
    part = all_parts(config, 2)[0]
    directory = write_part(tmp_path / "shard-0", part)
    assert json.loads((directory / PART_MANIFEST_FILENAME).read_text())["shard"] == "1/2"
    for path in (directory, directory / "audit.json"):
        read = read_part(path)
        assert replace(read.manifest, files={}) == part.manifest
        assert set(read.manifest.files) == {"audit.json"}
        assert read.run.to_dict() == part.run.to_dict()
        assert read.label == str(path) and read.journal is None


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("no manifest", "no shard.json beside audit.json"),
        ("bad json", "cannot be read"),
        ("not an object", "not a JSON object"),
        ("wrong version", "unsupported shard manifest version"),
        ("no such part", "no such file or directory"),
        ("no audit.json", "file not found"),
    ],
)
def test_read_part_names_the_damaged_file(tmp_path: Path, damage: str, fragment: str) -> None:
    config = make_config(tmp_path, tenant_ids(4))
    directory = write_part(tmp_path / "part", all_parts(config, 1)[0])
    manifest = directory / PART_MANIFEST_FILENAME
    if damage == "no manifest":
        manifest.unlink()
    elif damage == "bad json":
        manifest.write_text("{")
    elif damage == "not an object":
        manifest.write_text("[]")
    elif damage == "wrong version":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 99}))
    elif damage == "no such part":
        directory = tmp_path / "nowhere"
    elif damage == "no audit.json":
        (directory / "audit.json").unlink()
    with pytest.raises(AuditorError) as caught:  # ShardError, or RunFileError for audit.json itself
        read_part(directory)
    assert fragment in str(caught.value)
    assert str(tmp_path) in str(caught.value)
    assert caught.value.exit_code == ExitCode.USAGE


def test_merge_reports_writes_one_run_and_the_journals(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(20))
    parts = all_parts(config, 3)
    dirs = [
        write_part(tmp_path / "parts" / f"shard-{i}", p, journal=f'{{"shard": {i}}}' if i != 1 else None)
        for i, p in enumerate(parts)
    ]
    stdout = io.StringIO()
    outcome = merge_reports(MergeOptions(tuple(dirs), tmp_path / "merged", ("json",)), stdout=stdout)
    saved = read_run(tmp_path / "merged" / "audit.json")
    assert saved.to_dict() == outcome.run.to_dict()
    assert [t.tenant_id for t in saved.tenants] == [t.tenant_id for t in config.tenants]
    assert (tmp_path / "merged" / "remediation.jsonl").read_text() == '{"shard": 0}\n{"shard": 2}\n'
    assert outcome.exit_code == ExitCode.GAPS  # the fake verdicts include non_compliant tenants
    text = stdout.getvalue()
    assert "Merged 3 shard parts into one run of 20 tenant(s)." in text
    assert str((tmp_path / "merged" / "audit.json").resolve()) in text
    assert "Exit code 1:" in text
    assert not (tmp_path / "merged" / PART_MANIFEST_FILENAME).exists()  # the merged run is not a part


def test_a_refused_merge_writes_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(10))
    one, _, three = all_parts(config, 3)
    dirs = (write_part(tmp_path / "a", one), write_part(tmp_path / "c", three))
    with pytest.raises(ShardError, match="missing shard 2/3"):
        merge_reports(MergeOptions(dirs, tmp_path / "merged"), stdout=io.StringIO())
    assert not (tmp_path / "merged").exists()


def test_merge_refuses_to_write_over_a_part(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(5))
    dirs = tuple(write_part(tmp_path / f"shard-{i}", p) for i, p in enumerate(all_parts(config, 2)))
    before = (dirs[0] / "audit.json").read_bytes()
    with pytest.raises(ShardError, match="merging would overwrite it"):
        merge_reports(MergeOptions(dirs, dirs[0]), stdout=io.StringIO())
    assert (dirs[0] / "audit.json").read_bytes() == before


def test_a_stale_manifest_left_in_the_directory_is_caught(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(6))
    yesterday, today = all_parts(config, 1)[0], all_parts(config, 1)[0]
    directory = write_part(tmp_path / "shard-0", yesterday)
    write_reports(today.run, directory, ["json"])  # tonight's run crashed before writing its shard.json
    with pytest.raises(ShardError, match="the directory mixes files of two runs"):
        merge_reports(MergeOptions((directory,), tmp_path / "merged"), stdout=io.StringIO())


def test_merge_checks_the_parts_against_the_config_given(tmp_path: Path) -> None:
    ids = tenant_ids(9)
    config = make_config(tmp_path, ids)
    dirs = tuple(write_part(tmp_path / f"shard-{i}", p) for i, p in enumerate(all_parts(config, 3)))
    ok = merge_reports(MergeOptions(dirs, tmp_path / "ok", config=config.path), stdout=io.StringIO())
    assert len(ok.run.tenants) == 9
    same_but_credentials = make_config(tmp_path, ids, name="host2.toml", extra="[run]\nconcurrency = 1")
    check_parts_against_config([read_part(d) for d in dirs], same_but_credentials)
    for name, kwargs, fragment in (
        ("price.toml", {"ids": ids, "price": 4.0}, "is priced at 2.5 GBP per mailbox, but"),
        ("fewer.toml", {"ids": ids[:-1]}, "that " + str(tmp_path / "fewer.toml") + " does not list"),
    ):
        other = make_config(tmp_path, name=name, **kwargs)
        with pytest.raises(ShardError, match=re.escape(fragment)):
            merge_reports(MergeOptions(dirs, tmp_path / name, config=other.path), stdout=io.StringIO())
        assert not (tmp_path / name).is_dir()
    with pytest.raises(AuditorError, match=r"nowhere\.toml"):  # a config that cannot be loaded: exit 2 too
        merge_reports(
            MergeOptions(dirs, tmp_path / "x", config=tmp_path / "nowhere.toml"), stdout=io.StringIO()
        )


# --- `auditor merge` ---------------------------------------------------------------------------------------


def cli() -> typer.Typer:
    """The `auditor` command line (merge among its commands)."""
    return main_app


def test_cli_merge_exit_codes_follow_the_merged_tenants(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(9))
    parts = all_parts(config, 3)
    errored = replace(
        parts[0].run,
        tenants=tuple(replace(r, status=Status.ERROR) for r in parts[0].run.tenants),
    )
    dirs = [write_part(tmp_path / f"shard-{i}", p) for i, p in enumerate(parts)]
    runner = CliRunner()
    result = runner.invoke(cli(), ["merge", *map(str, dirs), "--out", str(tmp_path / "out"), "-f", "json"])
    assert result.exit_code == ExitCode.GAPS, result.output
    write_part(dirs[0], replace(parts[0], run=errored))
    result = runner.invoke(cli(), ["merge", *map(str, dirs), "--out", str(tmp_path / "out")])
    assert result.exit_code == ExitCode.TENANT_ERROR, result.output


def test_cli_merge_usage_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(9))
    parts = all_parts(config, 3)
    dirs = [write_part(tmp_path / f"shard-{i}", p) for i, p in enumerate(parts)]
    runner = CliRunner()
    result = runner.invoke(cli(), ["merge", str(dirs[0]), str(dirs[2]), "--out", str(tmp_path / "out")])
    assert result.exit_code == ExitCode.USAGE
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: missing shard 2/3"), result.stderr
    assert "Traceback" not in result.output
    result = runner.invoke(cli(), ["merge", *map(str, dirs), "--out", str(tmp_path / "o"), "-f", "pdf"])
    assert result.exit_code == ExitCode.USAGE and "unknown report format" in result.stderr
    assert not (tmp_path / "o").exists()


def test_cli_merge_max_spread_zero_turns_the_check_off(tmp_path: Path) -> None:
    config = make_config(tmp_path, tenant_ids(9))
    one, two, _ = all_parts(config, 3)
    old = part_for(config, Shard(3, 3), started=T0 - timedelta(days=3))
    dirs = [write_part(tmp_path / f"shard-{i}", p) for i, p in enumerate([one, two, old])]
    args = ["merge", *map(str, dirs), "--out", str(tmp_path / "out")]
    runner = CliRunner()
    assert runner.invoke(cli(), args).exit_code == ExitCode.USAGE
    assert runner.invoke(cli(), [*args, "--max-spread", "0"]).exit_code == ExitCode.GAPS


# --- helpers -----------------------------------------------------------------------------------------------


class _Tenant:
    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id


def _ids(ids: list[str]) -> list[_Tenant]:
    return [_Tenant(t) for t in ids]

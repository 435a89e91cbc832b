"""Sharding: split one night's fleet over several processes, and merge their partial runs back into one.

``auditor audit --shard K/N`` audits only the tenants that fall in shard K of N and writes a *part*: the
usual ``audit.json`` (a plain run over those tenants, DESIGN §3.3 unchanged) plus a small sidecar,
``shard.json`` (:class:`ShardManifest`), that says which shard it is, which run it belongs to, the whole
tenant selection in config order, and a fingerprint of that selection and of the settings that decide
verdicts and costs. ``auditor merge PART... --out DIR`` turns the N parts into one run and one set of
reports.

Three layers, top to bottom:

* **pure** (no I/O): :func:`parse_shard`, :func:`shard_of` / :meth:`Shard.select`,
  :func:`config_fingerprint`, :func:`part_manifest`, :func:`merge_parts` and
  :func:`check_parts_against_config`;
* **files**: :func:`write_part_manifest` and :func:`read_part`;
* **the merge command**: :func:`merge_reports`, what ``auditor merge`` calls.

Assignment. A tenant's shard depends on its ``tenant_id`` alone (SHA-256 of the lower-cased id, modulo
N), never on the config order or on the other tenants: adding, removing or reordering tenants moves no
other tenant, and every process computes the same split without talking to the others. Changing N
reshuffles tenants, which is harmless because the merge reassembles the whole run.

Merging. The parts must come from the same split and the same selection; :func:`merge_parts` refuses,
with one clear message each, a part whose ``shard.json`` belongs to another run, parts from different
configs or tenant selections (fingerprint), different N, a shard given twice, a missing shard, a part
holding tenants of another shard or lacking some of its own, different modes or tool versions, and parts
whose audits started too far apart to be the same night's (a stale part left over in a shared folder).
The merged run lists the tenants in config order, exactly as an unsharded run would.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol, TextIO, TypeVar

from auditor.config import AuditConfig, TenantConfig, load_config
from auditor.errors import UsageError
from auditor.model import RunResult, TenantResult
from auditor.remediation import JOURNAL_FILENAME
from auditor.reporting.atomic import DEFAULT_MODE
from auditor.reporting.json_report import JSON_FILENAME

__all__ = [
    "DEFAULT_MAX_START_SPREAD",
    "PART_MANIFEST_FILENAME",
    "MergeOptions",
    "MergeOutcome",
    "Shard",
    "ShardError",
    "ShardManifest",
    "ShardPart",
    "check_parts_against_config",
    "config_fingerprint",
    "merge_parts",
    "merge_reports",
    "merged_run_id",
    "parse_shard",
    "part_manifest",
    "read_part",
    "shard_of",
    "write_part_manifest",
]

# The sidecar an `auditor audit --shard K/N` run writes beside audit.json in its --out directory.
PART_MANIFEST_FILENAME: Final = "shard.json"
# Parts of one night start within minutes of each other; a day apart means a stale part was left behind.
DEFAULT_MAX_START_SPREAD: Final = timedelta(hours=12)

_MANIFEST_KIND: Final = "uss-auditor.shard-part"
# Version 2 added `files`: the SHA-256 of the part's audit.json (and remediation.jsonl), checked at merge.
_MANIFEST_VERSION: Final = 2
_SHARD_RE: Final = re.compile(r"^\s*([0-9]+)\s*/\s*([0-9]+)\s*$")
_SHARD_HINT: Final = (
    "Use --shard K/N: shard K (counted from 1) of N, e.g. --shard 2/3. In a Kubernetes Indexed Job "
    "JOB_COMPLETION_INDEX counts from 0, so pass --shard $((JOB_COMPLETION_INDEX+1))/N."
)
# Fixed namespace for merged run ids, so merging the same parts again gives the same id.
_MERGE_NAMESPACE: Final = uuid.UUID("6d1f3a52-3c1e-4f57-9a0e-5b2d7c8e4a10")
_LISTED: Final = 5  # tenants or parts named in one message before "and N more"


class ShardError(UsageError):
    """A ``--shard`` value, a part or a set of parts that cannot be used; nothing is written (exit 2)."""

    def __str__(self) -> str:
        # One line: what is wrong. What to do.
        return f"{self.message.rstrip('. ')}. {self.hint}" if self.hint else self.message


# --- pure: the split --------------------------------------------------------------------------------------


class _HasTenantId(Protocol):
    @property
    def tenant_id(self) -> str: ...


_T = TypeVar("_T", bound=_HasTenantId)


@dataclass(frozen=True, order=True)
class Shard:
    """Shard ``index`` (counted from 1) of ``count``; ``str()`` is the ``K/N`` form ``--shard`` takes."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 1 <= self.index <= self.count:
            raise ValueError(f"invalid shard {self.index}/{self.count}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def contains(self, tenant_id: str) -> bool:
        """True when the tenant with this id is audited by this shard."""
        return shard_of(tenant_id, self.count) == self.index

    def select(self, tenants: Iterable[_T]) -> list[_T]:
        """The tenants (or results) that belong to this shard, in the order given."""
        return [t for t in tenants if self.contains(t.tenant_id)]


def parse_shard(text: str) -> Shard:
    """Parse a ``--shard`` value ``K/N`` (1 <= K <= N). Raises :class:`ShardError` (exit 2) otherwise."""
    match = _SHARD_RE.match(text)
    if match is None:
        raise ShardError(f"--shard {text!r}: expected K/N, two whole numbers", hint=_SHARD_HINT)
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1:
        raise ShardError(
            f"--shard {text.strip()}: the number of shards N must be at least 1", hint=_SHARD_HINT
        )
    if not 1 <= index <= count:
        raise ShardError(
            f"--shard {text.strip()}: K must be between 1 and {count} (shards are counted from 1)",
            hint=_SHARD_HINT,
        )
    return Shard(index, count)


def shard_of(tenant_id: str, count: int) -> int:
    """The shard (1..``count``) a tenant belongs to: SHA-256 of its lower-cased id, modulo ``count``.

    Depends on nothing but the id and ``count``: not on the config order, not on the other tenants, not
    on the Python process (unlike ``hash()``), so every shard process agrees without coordination.
    """
    if count < 1:
        raise ValueError(f"the number of shards must be at least 1, not {count}")
    digest = hashlib.sha256(tenant_id.strip().lower().encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % count + 1


def config_fingerprint(config: AuditConfig, selected: Sequence[TenantConfig]) -> str:
    """A digest of what a run over ``selected`` audits and how it judges and prices it.

    Covers the vendor and billing settings and, in order, each selected tenant's id, name, tags, price
    and ``remediate`` flag. Authentication (certificate paths, endpoints) and run limits are left out on
    purpose: shards may run on different hosts with their own credential files.
    """
    document = {
        "vendor": asdict(config.vendor),
        "billing": asdict(config.billing),
        "tenants": [
            {
                "tenant_id": t.tenant_id.lower(),
                "name": t.name,
                "tags": list(t.tags),
                "price_per_mailbox": t.price_per_mailbox,
                "remediate": t.remediate,
            }
            for t in selected
        ],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- pure: parts and the merge ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardManifest:
    """``shard.json``: which shard a part is, the run it belongs to, and the selection it was cut from.

    ``tenant_ids`` is the whole selection (every shard's tenants) in config order: the merge checks each
    part against it and restores that order.
    """

    shard: Shard
    run_id: str
    fingerprint: str
    tenant_ids: tuple[str, ...]
    # File name -> "sha256:<hex>" of the part's audit.json and remediation.jsonl as written; filled in by
    # write_part_manifest, verified by read_part. A part edited afterwards (tenants made compliant at £0)
    # no longer matches and is refused.
    files: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``shard.json`` document."""
        return {
            "kind": _MANIFEST_KIND,
            "version": _MANIFEST_VERSION,
            "shard": str(self.shard),
            "run_id": self.run_id,
            "fingerprint": self.fingerprint,
            "tenant_ids": list(self.tenant_ids),
            "files": dict(self.files),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardManifest:
        """Inverse of :meth:`to_dict`. Raises ``ValueError`` naming what is wrong."""
        if data.get("kind") != _MANIFEST_KIND:
            raise ValueError(f"not a shard manifest (kind {data.get('kind')!r})")
        if data.get("version") != _MANIFEST_VERSION:
            raise ValueError(
                f"unsupported shard manifest version {data.get('version')!r} (this tool reads "
                f"{_MANIFEST_VERSION}; version 1 parts carry no digests of their files and cannot be verified)"
            )
        match = _SHARD_RE.match(str(data.get("shard", "")))
        if match is None:
            raise ValueError(f"shard {data.get('shard')!r} is not K/N")
        ids = data.get("tenant_ids")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("tenant_ids must be a list of tenant id strings")
        run_id, fingerprint = data.get("run_id"), data.get("fingerprint")
        if not isinstance(run_id, str) or not run_id or not isinstance(fingerprint, str) or not fingerprint:
            raise ValueError("run_id and fingerprint must be non-empty strings")
        files = data.get("files")
        if (
            not isinstance(files, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
            or JSON_FILENAME not in files
        ):
            raise ValueError(f"files must map {JSON_FILENAME} (and {JOURNAL_FILENAME}) to their SHA-256")
        return cls(
            shard=Shard(int(match.group(1)), int(match.group(2))),
            run_id=run_id,
            fingerprint=fingerprint,
            tenant_ids=tuple(ids),
            files=dict(files),
        )


def part_manifest(
    shard: Shard, run: RunResult, config: AuditConfig, selected: Sequence[TenantConfig]
) -> ShardManifest:
    """The manifest for ``run``, the audit of ``shard`` of ``selected`` (the selection *before* sharding)."""
    return ShardManifest(
        shard=shard,
        run_id=run.run_id,
        fingerprint=config_fingerprint(config, selected),
        tenant_ids=tuple(t.tenant_id.lower() for t in selected),
    )


@dataclass(frozen=True)
class ShardPart:
    """One shard's output as read back: its run, its manifest, and where it came from (for messages)."""

    label: str
    run: RunResult
    manifest: ShardManifest
    journal: Path | None = None  # the part's remediation.jsonl, when remediation ran

    @property
    def shard(self) -> Shard:
        """Which shard this part is."""
        return self.manifest.shard


def merge_parts(
    parts: Sequence[ShardPart], *, max_start_spread: timedelta | None = DEFAULT_MAX_START_SPREAD
) -> RunResult:
    """One run from the N parts of a sharded audit, tenants in config order.

    The merged run id is derived from the parts' run ids (:func:`merged_run_id`); it started when the
    first part started and finished when the last part finished. ``max_start_spread`` (``None``: no
    check) bounds how far apart the parts' start times may be.

    Raises :class:`ShardError` when the parts do not make exactly one complete run (see the module doc).
    """
    if not parts:
        raise ShardError(
            "no parts to merge", hint="Pass the --out directory of every `auditor audit --shard`."
        )
    for part in parts:
        if part.manifest.run_id != part.run.run_id:
            raise ShardError(
                f"{part.label}: {PART_MANIFEST_FILENAME} belongs to run {part.manifest.run_id} but "
                f"{JSON_FILENAME} is run {part.run.run_id}: the directory mixes files of two runs",
                hint="Re-run that shard into an empty --out directory.",
            )
    first = parts[0]
    for part in parts[1:]:
        _check_same_split(first, part)
    by_shard: dict[int, ShardPart] = {}
    for part in parts:
        seen = by_shard.setdefault(part.shard.index, part)
        if seen is not part:
            raise ShardError(
                f"shard {part.shard} given twice: {seen.label} and {part.label}",
                hint="Pass each shard's part once.",
            )
    count = first.shard.count
    missing = [Shard(k, count) for k in range(1, count + 1) if k not in by_shard]
    if missing:
        raise ShardError(
            f"missing shard{'s' if len(missing) > 1 else ''} {_listed(str(s) for s in missing)}: a merge "
            f"needs all {count} parts (got {_listed(str(p.shard) for p in sorted(parts, key=_by_shard))})",
            hint="Wait for the missing shards to finish, or re-run them with --shard K/N, then merge all parts.",
        )
    _check_start_spread(parts, max_start_spread)

    results: dict[str, TenantResult] = {}
    for part in sorted(parts, key=_by_shard):
        for result in _check_part_tenants(part):
            results[result.tenant_id.lower()] = result
    return RunResult(
        run_id=merged_run_id(parts),
        started_at=min(p.run.started_at for p in parts),
        finished_at=max(p.run.finished_at for p in parts),
        tool_version=first.run.tool_version,
        mode=first.run.mode,
        tenants=tuple(results[tenant_id.lower()] for tenant_id in first.manifest.tenant_ids),
        currency=first.run.currency,
        vendor_search=first.run.vendor_search,
    )


def check_parts_against_config(parts: Sequence[ShardPart], config: AuditConfig) -> None:
    """Refuse parts that were not audited with ``config``: a tenant it does not list, or other vendor,
    billing or tenant settings than it has (the fingerprint). Call it after :func:`merge_parts`, which
    makes sure every part carries the same selection.
    """
    if not parts:
        return
    manifest = parts[0].manifest
    by_id = {t.tenant_id.lower(): t for t in config.tenants}
    unknown = [t for t in manifest.tenant_ids if t.lower() not in by_id]
    hint = "Pass the config file the shards were run with."
    if unknown:
        raise ShardError(
            f"the parts audited tenant{'s' if len(unknown) > 1 else ''} {_listed(unknown)} that "
            f"{config.path} does not list",
            hint=hint,
        )
    for part in parts:
        _check_part_prices(part, config, by_id)
    selected = [by_id[t.lower()] for t in manifest.tenant_ids]
    if config_fingerprint(config, selected) != manifest.fingerprint:
        raise ShardError(
            f"the parts were audited with other settings than {config.path} (the vendor, billing or "
            f"tenant settings differ, or the tenants are in another order)",
            hint=hint,
        )


def _check_part_prices(part: ShardPart, config: AuditConfig, by_id: Mapping[str, TenantConfig]) -> None:
    """Each tenant of the part priced as ``config`` prices it, in its currency, at a cost that is its
    billed mailboxes times that price: what the part claims must follow from the config, not be taken
    from a file anyone could have edited."""
    where = f"{part.label} (shard {part.shard})"
    hint = "Re-run that shard with this config (`auditor audit --shard K/N`); never edit a part by hand."
    currency = config.billing.currency
    if part.run.currency != currency:
        raise ShardError(
            f"{where} was priced in {part.run.currency}, but {config.path} prices in {currency}", hint=hint
        )
    for result in part.run.tenants:
        tenant = by_id.get(result.tenant_id.lower())
        if tenant is None:
            continue  # named by the fingerprint check
        billing = result.billing
        label = f"{where}: tenant {result.name} ({result.tenant_id})"
        if billing.currency != currency:
            raise ShardError(
                f"{label} is priced in {billing.currency}, but {config.path} prices in {currency}", hint=hint
            )
        if not math.isclose(billing.price_per_mailbox, tenant.price_per_mailbox, abs_tol=1e-9):
            raise ShardError(
                f"{label} is priced at {billing.price_per_mailbox:g} {currency} per mailbox, but "
                f"{config.path} says {tenant.price_per_mailbox:g} {currency}",
                hint=hint,
            )
        billed, cost = billing.billed_shared_mailboxes, billing.monthly_cost
        if billed is not None and cost is not None:
            expected = billed * tenant.price_per_mailbox
            if not math.isclose(cost, expected, abs_tol=0.005 + 1e-9):
                raise ShardError(
                    f"{label} costs {cost:g} {currency} a month, but {billed} billed mailbox(es) at "
                    f"{tenant.price_per_mailbox:g} {currency} cost {expected:g}",
                    hint=hint,
                )


def merged_run_id(parts: Iterable[ShardPart]) -> str:
    """A run id for the merge of ``parts``: the same parts always give the same id, whatever their order."""
    return str(uuid.uuid5(_MERGE_NAMESPACE, "\n".join(sorted(p.run.run_id for p in parts))))


def _check_same_split(first: ShardPart, part: ShardPart) -> None:
    pair = f"{part.label} (shard {part.shard}) and {first.label} (shard {first.shard})"
    if part.shard.count != first.shard.count:
        raise ShardError(
            f"{pair} come from different splits: every part must be one of the same N shards",
            hint="Run every shard with the same N in --shard K/N and merge the parts of one night only.",
        )
    if part.manifest.fingerprint != first.manifest.fingerprint or (
        part.manifest.tenant_ids != first.manifest.tenant_ids
    ):
        raise ShardError(
            f"{pair} audited different configs or tenant selections (the vendor, billing or tenant "
            f"settings differ)",
            hint="Run every shard with the same config file and the same --tenant/--tag options.",
        )
    checks = (
        ("modes", part.run.mode.value, first.run.mode.value),
        ("auditor versions", part.run.tool_version, first.run.tool_version),
        ("currencies", part.run.currency, first.run.currency),
    )
    for what, mine, theirs in checks:
        if mine != theirs:
            raise ShardError(
                f"{pair} were run with different {what} ({mine} and {theirs})",
                hint="Run every shard with the same auditor version and the same options.",
            )


def _check_start_spread(parts: Sequence[ShardPart], max_start_spread: timedelta | None) -> None:
    if max_start_spread is None or max_start_spread <= timedelta(0):
        return
    earliest = min(parts, key=lambda p: p.run.started_at)
    latest = max(parts, key=lambda p: p.run.started_at)
    spread = latest.run.started_at - earliest.run.started_at
    if spread > max_start_spread:
        hours = spread.total_seconds() / 3600
        raise ShardError(
            f"the parts started {hours:.1f} h apart ({earliest.label} at {_utc(earliest.run.started_at)}, "
            f"{latest.label} at {_utc(latest.run.started_at)}): one of them is probably left over from an "
            f"earlier run",
            hint="Re-run the stale shard, or pass --max-spread 0 to merge them anyway.",
        )


def _check_part_tenants(part: ShardPart) -> tuple[TenantResult, ...]:
    """The part's results, after checking they are exactly its shard's share of the selection."""
    expected = [t.lower() for t in part.manifest.tenant_ids if part.shard.contains(t)]
    got = [r.tenant_id.lower() for r in part.run.tenants]
    where = f"{part.label} (shard {part.shard})"
    duplicates = sorted(t for t, n in Counter(got).items() if n > 1)
    if duplicates:
        raise ShardError(
            f"{where} lists tenant{'s' if len(duplicates) > 1 else ''} {_listed(duplicates)} more than once",
            hint="The part is damaged: re-run that shard.",
        )
    expected_set, got_set = set(expected), set(got)
    foreign = [t for t in got if t not in expected_set]
    if foreign:
        raise ShardError(
            f"{where} holds tenant{'s' if len(foreign) > 1 else ''} {_listed(foreign)}, which "
            f"{'belong' if len(foreign) > 1 else 'belongs'} to another shard or to no shard of the selection",
            hint="The part is damaged or was not written by `auditor audit --shard`: re-run that shard.",
        )
    lacking = [t for t in expected if t not in got_set]
    if lacking:
        raise ShardError(
            f"{where} lacks tenant{'s' if len(lacking) > 1 else ''} {_listed(lacking)} of its shard: the "
            f"part is incomplete",
            hint="Re-run that shard with the same config and options.",
        )
    return part.run.tenants


def _utc(moment: datetime) -> str:
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _by_shard(part: ShardPart) -> int:
    return part.shard.index


def _listed(items: Iterable[str]) -> str:
    names = list(items)
    shown = ", ".join(names[:_LISTED])
    more = len(names) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


# --- files --------------------------------------------------------------------------------------------------


def write_part_manifest(out_dir: Path, manifest: ShardManifest, *, mode: int = DEFAULT_MODE) -> Path:
    """Write ``shard.json`` into ``out_dir`` atomically; returns its path.

    Written *after* the reports: a part is complete once its ``shard.json`` names the run in its
    ``audit.json``, which is what schedulers wait for and what :func:`merge_parts` checks.
    """
    from auditor.reporting.atomic import atomic_write_text

    out_dir = Path(out_dir)
    files = {
        name: _digest(out_dir / name)
        for name in (JSON_FILENAME, JOURNAL_FILENAME)
        if (out_dir / name).is_file()
    }
    target = out_dir / PART_MANIFEST_FILENAME
    document = replace(manifest, files=files).to_dict()
    return atomic_write_text(target, json.dumps(document, indent=2) + "\n", mode=mode)


def _digest(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, read in blocks."""
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return "sha256:" + sha.hexdigest()


def _verify_part_files(directory: Path, manifest: ShardManifest) -> None:
    """Every file the part consists of is exactly what its audit wrote (the digests in shard.json)."""
    hint = (
        "The part was changed after `auditor audit --shard` wrote it: re-run that shard; never edit a part "
        "by hand."
    )
    for name in (JSON_FILENAME, JOURNAL_FILENAME):
        path = directory / name
        expected = manifest.files.get(name)
        present = path.is_file()
        if expected is None:
            if present:
                raise ShardError(
                    f"{directory}: {name} is not part of what {PART_MANIFEST_FILENAME} records (it was added "
                    f"after the part was written)",
                    hint=hint,
                )
            continue
        if not present:
            raise ShardError(
                f"{directory}: {name} is missing, but {PART_MANIFEST_FILENAME} records it", hint=hint
            )
        try:
            actual = _digest(path)
        except OSError as exc:
            raise ShardError(f"{path}: cannot be read ({exc.strerror or exc})", hint=hint) from None
        if actual != expected:
            raise ShardError(
                f"{directory}: {name} does not match the SHA-256 recorded in {PART_MANIFEST_FILENAME}",
                hint=hint,
            )


def read_part(path: Path) -> ShardPart:
    """Read a part: ``path`` is a sharded run's ``--out`` directory, or the ``audit.json`` inside it.

    Raises :class:`ShardError` (or :class:`~auditor.reporting.RunFileError` for a bad ``audit.json``),
    both exit code 2, with the path in the message.
    """
    from auditor.reporting.json_report import read_run

    path = Path(path)
    if path.is_dir():
        directory, audit_json = path, path / JSON_FILENAME
    elif path.exists():
        directory, audit_json = path.parent, path
    else:
        raise ShardError(
            f"{path}: no such file or directory",
            hint="Pass the --out directory of each `auditor audit --shard K/N` run.",
        )
    run = read_run(audit_json)
    manifest_path = directory / PART_MANIFEST_FILENAME
    hint = (
        "Pass the --out directory of each `auditor audit --shard K/N` run; an unsharded run needs no merge."
    )
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(
            f"{directory}: no {PART_MANIFEST_FILENAME} beside {JSON_FILENAME}: not the output of "
            f"`auditor audit --shard K/N`, or that run did not finish",
            hint=hint,
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{manifest_path}: cannot be read ({exc})", hint=hint) from None
    try:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        manifest = ShardManifest.from_dict(data)
    except ValueError as exc:
        raise ShardError(f"{manifest_path}: {exc}", hint=hint) from None
    if manifest.run_id == run.run_id:  # otherwise merge_parts names the mix of two runs' files
        _verify_part_files(directory, manifest)
    journal = directory / JOURNAL_FILENAME
    return ShardPart(
        label=str(path), run=run, manifest=manifest, journal=journal if journal.is_file() else None
    )


def _merge_journals(
    parts: Sequence[ShardPart], out_dir: Path, *, mode: int = DEFAULT_MODE
) -> tuple[Path | None, list[str]]:
    """Concatenate the parts' remediation journals, in shard order, into ``out_dir``; returns the file (None
    when no part remediated) and its lines."""
    from auditor.reporting.atomic import atomic_write_text

    texts = []
    for part in sorted(parts, key=_by_shard):
        if part.journal is None:
            continue
        try:
            text = part.journal.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ShardError(
                f"{part.journal}: cannot be read ({exc})", hint="Check the part's files, then merge again."
            ) from None
        if text and not text.endswith("\n"):
            text += "\n"
        texts.append(text)
    if not texts:
        return None, []
    merged = "".join(texts)
    return atomic_write_text(Path(out_dir) / JOURNAL_FILENAME, merged, mode=mode), merged.splitlines()


# --- the merge command ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeOptions:
    """What ``auditor merge`` was asked to do."""

    parts: tuple[Path, ...]
    out_dir: Path
    formats: tuple[str, ...] = ()  # --format values; empty: every available format
    max_start_spread: timedelta | None = DEFAULT_MAX_START_SPREAD  # None: no staleness check
    config: Path | None = None  # --config: the config the shards ran with, checked against the parts


@dataclass(frozen=True)
class MergeOutcome:
    """A finished merge: the merged run, the files written and the process exit code."""

    run: RunResult
    reports: tuple[Path, ...]
    exit_code: int


def merge_reports(options: MergeOptions, *, stdout: TextIO | None = None) -> MergeOutcome:
    """Read the parts, merge them (and check them against ``options.config`` when given), write the
    reports (and the parts' remediation journals, concatenated) into ``options.out_dir``, print the
    summary; the exit code follows DESIGN §3.1 for the merged tenants.

    Every check runs before anything is written: a refused merge (exit code 2) leaves ``--out`` as it was.
    """
    from auditor.notify import NotificationSettings, notification_settings
    from auditor.outcome import finish_run, prepare_notifications, write_run_reports
    from auditor.reporting import parse_formats, prepare_out_dir

    stdout = stdout if stdout is not None else sys.stdout
    formats = parse_formats(options.formats)
    _refuse_out_dir_inside_a_part(options)
    config = load_config(options.config) if options.config is not None else None
    # The merged run is the night's run: it notifies (with --config), the parts never do.
    notifications = notification_settings(config) if config is not None else NotificationSettings()
    if config is not None:
        prepare_notifications(notifications, config)
    parts = [read_part(path) for path in options.parts]
    run = merge_parts(parts, max_start_spread=options.max_start_spread)
    if config is not None:
        check_parts_against_config(parts, config)
    out_dir = prepare_out_dir(options.out_dir)
    file_mode = config.reports.file_mode if config is not None else DEFAULT_MODE
    insights = None
    if config is None:
        journal, _ = _merge_journals(parts, out_dir, mode=file_mode)
    else:
        # The merged run is the night's run: it (not the parts) goes into the history. The same parts
        # always make the same run id, so a merge repeated is refused before anything is written or
        # recorded (no second row, no "interrupted" placeholder).
        from auditor.history import HistoryAlreadyRecordedError, open_history

        try:
            history = open_history(config, started_at=run.started_at, run_id=run.run_id)
        except HistoryAlreadyRecordedError as exc:
            raise ShardError(
                f"these parts were merged before: {exc.message}; nothing was written",
                hint="The reports of that merge are in its --out directory (`auditor report` re-renders its "
                "audit.json); to write them again without recording, merge without --config.",
            ) from None
        with history:
            journal, journal_lines = _merge_journals(parts, out_dir, mode=file_mode)
            insights = history.record(run, journal_lines)
    written = write_run_reports(run, out_dir, formats, insights=insights, file_mode=file_mode)
    if journal is not None:
        written = replace(written, paths=(*written.paths, journal))
    count = parts[0].shard.count
    note = f"\nMerged {count} shard part{'s' if count > 1 else ''} into one run of {len(run.tenants)} tenant(s).\n"
    code = finish_run(run, written, out_dir, stdout, notes=[note], settings=notifications, insights=insights)
    return MergeOutcome(run=run, reports=written.paths, exit_code=code)


def _refuse_out_dir_inside_a_part(options: MergeOptions) -> None:
    # Writing the merged audit.json over a part would destroy the part (and the next merge with it).
    out = Path(options.out_dir).resolve()
    for part in options.parts:
        directory = Path(part).resolve()
        if not directory.is_dir():
            directory = directory.parent
        if out == directory:
            raise ShardError(
                f"--out {options.out_dir} is the part {part}: merging would overwrite it",
                hint="Write the merged reports to a directory of their own, e.g. --out reports/merged.",
            )

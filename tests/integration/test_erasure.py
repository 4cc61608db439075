"""Right to erasure against real stores: a hand-made landing zone (CSV, JSON Lines, gzip, Parquet; valid,
duplicate, malformed and bot rows) is ingested, sessionised and paired with the real Spark code, the
warehouse is built with the real dbt project, then one user is erased. Every store is checked: the
subject is gone everywhere (hidden superseded copies included), every other row is exactly as before,
the counts add up, and the receipt holds no personal data.

The subject is ``user-1`` and another user is ``user-10``: a prefix match would take the wrong rows.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from relevance_core.erasure import (
    RECEIPTS_PREFIX,
    erase_users,
    mentions,
    read_receipt,
    scan,
    subject_hash,
)
from relevance_core.ingest import ingest_events_day
from relevance_core.pipeline.pairs import build_training_pairs
from relevance_core.pipeline.sessionize import build_sessions
from relevance_core.schemas import ITEM_ARROW_SCHEMA
from relevance_core.storage import LocalStore
from relevance_core.warehouse import WAREHOUSE_KEY

SUBJECT = "user-1"
OTHERS = ("user-10", "user-2")
DAY_A, DAY_B = "2026-03-09", "2026-03-10"
LAKE_STORES = ("raw_events", "quarantine/raw_events", "sessions", "quarantine/sessions", "training_pairs")


def _ts(day: str, h: int, m: int = 0, s: int = 0, ms: int = 0) -> str:
    t = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(
        hours=h, minutes=m, seconds=s, milliseconds=ms
    )
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _ev(user, item, etype, ts, session=None, device="mobile") -> dict:
    return {
        "user_id": user,
        "session_id": session,
        "item_id": item,
        "event_type": etype,
        "timestamp": ts,
        "device_type": device,
    }


def _csv_line(e: dict) -> str:
    return ",".join("" if e[c] is None else str(e[c]) for c in e)


def build_landing(store: LocalStore) -> None:
    """Day A: JSON Lines, gzipped, with a bot minute for the subject and for user-2 (→ quarantine/sessions).
    Day B: CSV + JSON Lines + Parquet, with duplicates and malformed rows of the subject and of others."""
    a = []
    for k in range(5):
        a.append(_ev(SUBJECT, f"i{k}", "view", _ts(DAY_A, 9, 2 * k)))
        a.append(_ev("user-10", f"i{k + 1}", "click", _ts(DAY_A, 10, 3 * k)))
    for k in range(70):  # > 60 events in one minute: a bot user-day
        a.append(_ev(SUBJECT, f"i{k % 7}", "view", _ts(DAY_A, 15, 0, 0, 500 * k)))
        a.append(_ev("user-2", f"i{k % 5}", "view", _ts(DAY_A, 16, 0, 0, 500 * k)))
    a.append(_ev(None, "i3", "view", _ts(DAY_A, 11), session="anon-1"))
    lines = [json.dumps(e) for e in a] + [
        '{"user_id": "user-1", "item_id": "i1", "event_type": "view"',
        "not json",
    ]
    store.write_bytes(
        f"landing/events/date={DAY_A}/events.jsonl.gz", gzip.compress(("\n".join(lines) + "\n").encode())
    )

    header = "user_id,session_id,item_id,event_type,timestamp,device_type"
    csv_rows = [
        _ev(SUBJECT, "i1", "view", _ts(DAY_B, 8)),
        _ev(SUBJECT, "i2", "add_to_cart", _ts(DAY_B, 8, 5)),
        _ev(SUBJECT, "i2", "add_to_cart", _ts(DAY_B, 8, 5)),  # exact duplicate
        _ev(SUBJECT, "i3", "teleport", _ts(DAY_B, 8, 6)),  # unknown event type → quarantine
        _ev("user-10", "i1", "view", _ts(DAY_B, 9)),
        _ev("user-10", "i4", "purchase", _ts(DAY_B, 9, 10)),
        _ev("user-10", "i4", "purchase", _ts(DAY_B, 9, 10)),  # duplicate of another user
        _ev("user-10", "i5", "view", "yesterday"),  # unparseable timestamp → quarantine
        _ev(None, "i6", "view", _ts(DAY_B, 12), session="anon-2"),
    ]
    text = "\r\n".join([header, *[_csv_line(e) for e in csv_rows], " user-1 ,x,i9", '"user-1,unbalanced,i1'])
    store.write_text(f"landing/events/date={DAY_B}/shop.csv", text + "\r\n")

    jl = [
        _ev(SUBJECT, "i5", "view", _ts(DAY_B, 8, 20)),
        _ev(SUBJECT, "i6", "click", _ts(DAY_B, 8, 25), session="s-1"),
        _ev("user-10", "i7", "view", _ts(DAY_B, 9, 30)),
        _ev("user-2", "i8", "view", _ts(DAY_B, 14)),
        _ev("user-2", "i9", "click", _ts(DAY_B, 14, 2)),
        _ev(SUBJECT, "i9", "view", "2026-03-11T01:00:00Z"),  # outside the day → quarantine
    ]
    jlines = [json.dumps(e) for e in jl] + [
        '{"user_id": "user-10", "item_id": broken}',
        '{"extra": {"who": "user-1"}',
    ]
    store.write_text(f"landing/events/date={DAY_B}/app.jsonl", "\n".join(jlines) + "\n")

    pq_rows = [
        _ev(SUBJECT, "i7", "purchase", _ts(DAY_B, 8, 30)),
        _ev("user-10", "i8", "add_to_cart", _ts(DAY_B, 9, 40)),
        _ev("user-2", "i1", "view", _ts(DAY_B, 14, 5)),
    ]
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(pq_rows), buf)
    store.write_bytes(f"landing/events/date={DAY_B}/feed.parquet", buf.getvalue())

    # synthetic ground truth, as the generator writes it
    truth = pa.table({"user_id": [SUBJECT, "user-10", "user-2"], "is_bot": [False, False, True]})
    buf = io.BytesIO()
    pq.write_table(truth, buf)
    store.write_bytes("generator_truth/users.parquet", buf.getvalue())
    store.write_text("generator_truth/report.json", json.dumps({"users": 3}))


def build_items(root: Path) -> None:
    rows = []
    for k in range(10):
        row = {c: None for c in ITEM_ARROW_SCHEMA.names}
        row.update(
            item_id=f"i{k}",
            title=f"Item {k}",
            category_path="A > B",
            price=float(k + 1),
            available=True,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        rows.append(row)
    d = root / "lake" / "items"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=ITEM_ARROW_SCHEMA), d / "part-0.parquet")


def build_lake(spark, store: LocalStore) -> dict:
    reports = {d: ingest_events_day(spark, store, d) for d in (DAY_A, DAY_B)}
    build_sessions(spark, store, DAY_A, DAY_B)
    build_training_pairs(spark, store, DAY_A, DAY_B, last_event_day=DAY_B)
    return reports


def build_warehouse(home: Path) -> None:
    from relevance_assets.defs.catalog.assets import catalog_dbt
    from relevance_assets.defs.catalog.project import dbt_resource
    from relevance_assets.resources import StorageResource

    build_items(home)
    result = dg.materialize(
        [catalog_dbt], resources={"dbt": dbt_resource(), "storage": StorageResource(base_uri=str(home))}
    )
    assert result.success
    # A user-level table such as a future model might keep: erasure finds tables by their user_id column.
    con = duckdb.connect(str(home / WAREHOUSE_KEY))
    con.execute("create table user_activity as select user_id, count(*) as n from stg_events group by 1")
    con.close()


# -- reading every store back ------------------------------------------------------------------------------


def _canon(rows: list[dict]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


def lake_rows(home: Path, table: str) -> dict[str, list[dict]]:
    out = {}
    for d in sorted((home / "lake" / table).glob("date=*")):
        out[d.name] = pq.read_table(d).to_pylist()
    return out


def landing_lines(home: Path) -> dict[str, list[str]]:
    out = {}
    for p in sorted((home / "landing" / "events").rglob("*")):
        if not p.is_file():
            continue
        key = p.relative_to(home).as_posix()
        if p.suffix == ".parquet":
            out[key] = _canon(pq.read_table(p).to_pylist())
        else:
            data = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            out[key] = data.decode("utf-8", errors="replace").splitlines()
    return out


def warehouse_rows(home: Path) -> dict[str, list[dict]]:
    con = duckdb.connect(str(home / WAREHOUSE_KEY), read_only=True)
    try:
        names = [r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()]
        return {n: con.sql(f'select * from "{n}"').fetchall() for n in sorted(names)}
    finally:
        con.close()


def is_subject_row(row) -> bool:
    if isinstance(row, dict):
        if "user_id" in row:
            return row["user_id"] == SUBJECT
        return mentions(row.get("raw") or "", frozenset({SUBJECT}))
    return mentions(row, frozenset({SUBJECT}))


def every_file_mentioning(home: Path, needle: str) -> list[str]:
    """Every file under the store (hidden ones included) that still holds the subject: Parquet read
    column by column, text searched as bytes. Receipts and the salt are excluded (checked separately)."""
    hits = []
    for p in home.rglob("*"):
        if not p.is_file() or "erasure" in p.relative_to(home).parts or p.suffix in (".duckdb", ".wal"):
            continue
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            for name in ("user_id", "raw"):
                if name in t.schema.names and any(
                    is_subject_row({name: v}) for v in t.column(name).to_pylist()
                ):
                    hits.append(str(p))
        else:
            data = p.read_bytes()
            if p.suffix == ".gz":
                data = gzip.decompress(data)
            if needle.encode() + b"," in data or b'"' + needle.encode() + b'"' in data:
                hits.append(str(p))
    return hits


# -- the test ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def erased(spark, tmp_path_factory):
    """Build everything once, snapshot every store, erase the subject, snapshot again."""
    home = tmp_path_factory.mktemp("erasure") / "home"
    store = LocalStore(home)
    build_landing(store)
    reports = build_lake(spark, store)
    build_warehouse(home)
    # re-run sessions once so the store holds a hidden superseded copy (it holds the subject too)
    build_sessions(spark, store, DAY_A, DAY_B)
    before = {
        "landing": landing_lines(home),
        **{t: lake_rows(home, t) for t in LAKE_STORES},
        "warehouse": warehouse_rows(home),
        "found": scan(store, [SUBJECT]),
    }
    result = erase_users(store, [SUBJECT], run_id="test-run-1")
    after = {
        "landing": landing_lines(home),
        **{t: lake_rows(home, t) for t in LAKE_STORES},
        "warehouse": warehouse_rows(home),
    }
    return home, store, reports, before, after, result


def test_the_subject_was_everywhere_before(erased):
    _, _, _, before, _, _ = erased
    found = {r.store for r in before["found"]}
    assert set(LAKE_STORES) | {"landing", "warehouse", "generator_truth"} <= found


def test_no_store_holds_the_subject_after(erased):
    home, store, _, _, after, result = erased
    assert scan(store, [SUBJECT]) == []
    assert result.remaining_after == 0 and result.passes == 1
    for table in LAKE_STORES:
        rows = [r for part in after[table].values() for r in part]
        assert rows, table  # other users' rows are still there
        assert not any(is_subject_row(r) for r in rows), table
    for key, lines in after["landing"].items():
        assert not any(is_subject_row(x) for x in lines), key
    wh = after["warehouse"]
    assert all(r[0] != SUBJECT for r in wh["user_activity"]) and len(wh["user_activity"]) >= 2
    assert all(r[0] != SUBJECT for r in wh["stg_events"])  # the view reads the clean lake
    truth = pq.read_table(home / "generator_truth" / "users.parquet").column("user_id").to_pylist()
    assert truth == ["user-10", "user-2"]
    # hidden superseded partition copies (kept by replace_dir for in-flight readers) are purged too
    assert every_file_mentioning(home, SUBJECT) == []
    assert not (home / "lake" / "sessions" / f".date={DAY_B}.previous").exists()


def test_other_rows_are_untouched_and_counts_add_up(erased):
    _, _, _, before, after, result = erased
    for table in LAKE_STORES:
        assert set(after[table]) == set(before[table]), table  # no partition appears or disappears
        removed = 0
        for part, rows in before[table].items():
            keep = [r for r in rows if not is_subject_row(r)]
            assert _canon(after[table][part]) == _canon(keep), (table, part)
            removed += len(rows) - len(keep)
        assert removed > 0 and result.rows_removed[table] == removed, table
    removed_landing = 0
    for key, lines in before["landing"].items():
        keep = [x for x in lines if not is_subject_row(x)]
        assert after["landing"][key] == keep, key
        removed_landing += len(lines) - len(keep)
    assert result.rows_removed["landing"] == removed_landing
    for name, rows in before["warehouse"].items():
        if name in ("user_activity", "stg_events"):
            assert _canon(after["warehouse"][name]) == _canon([r for r in rows if r[0] != SUBJECT]), name
        else:  # aggregates: unchanged until the next dbt build recomputes them (the receipt says so)
            assert after["warehouse"][name] == rows, name
    # the view was clean as soon as the lake was; only the user-level table lost a row
    assert result.rows_removed["warehouse"] == 1
    assert set(result.pending_recompute) == {"item_popularity", "daily_event_stats"}


def test_reingesting_the_erased_landing_gives_the_erased_lake(spark, erased, tmp_path):
    """The landing files were rewritten in their own format, so the accounting of the day still holds
    and a re-run of ingestion (e.g. a late file triggers one) can never bring the subject back."""
    home, _, reports, before, after, _ = erased
    copy = tmp_path / "again"
    shutil.copytree(home / "landing", copy / "landing")
    again = LocalStore(copy)
    for day in (DAY_A, DAY_B):
        r = ingest_events_day(spark, again, day)
        assert r.rows_in == r.accepted + r.quarantined + r.duplicates_removed
        old = reports[day]
        # exactly the subject's rows left the day: accepted + quarantined + duplicates
        gone = old.rows_in - r.rows_in
        acc = len(before["raw_events"][f"date={day}"]) - len(after["raw_events"][f"date={day}"])
        qua = len(before["quarantine/raw_events"][f"date={day}"]) - len(
            after["quarantine/raw_events"][f"date={day}"]
        )
        assert gone == acc + qua + (old.duplicates_removed - r.duplicates_removed) > 0
        for table in ("raw_events", "quarantine/raw_events"):
            assert _canon(pq.read_table(copy / "lake" / table / f"date={day}").to_pylist()) == _canon(
                after[table][f"date={day}"]
            )


def test_receipt_holds_no_personal_data(erased):
    home, store, _, _, _, result = erased
    assert result.receipt_key.startswith(RECEIPTS_PREFIX + "/")
    text = store.read_text(result.receipt_key)
    assert SUBJECT not in text
    receipt = read_receipt(store, result.receipt_key)
    salt = store.read_text("erasure/salt").strip().encode()
    assert receipt["subjects"] == [subject_hash(SUBJECT, salt)]
    assert receipt["run_id"] == "test-run-1" and receipt["status"] == "complete"
    assert receipt["total_removed"] == sum(receipt["rows_removed"].values()) > 0
    assert {"landing", *LAKE_STORES, "warehouse", "generator_truth"} <= set(receipt["stores_checked"])
    assert datetime.fromisoformat(receipt["created_at"]).tzinfo is not None


def test_ids_in_file_names_are_hashed_in_the_receipt_and_a_rerun_is_a_no_op(tmp_path):
    store = LocalStore(tmp_path / "h")
    store.write_text(
        "landing/events/date=2026-03-10/export-jane.doe@example.org.jsonl",
        json.dumps(_ev("jane.doe@example.org", "i1", "view", _ts(DAY_B, 1)))
        + "\n"
        + json.dumps(_ev("jane.doe@example.org.uk", "i1", "view", _ts(DAY_B, 1)))
        + "\n",
    )
    r = erase_users(store, ["jane.doe@example.org"])
    text = store.read_text(r.receipt_key)
    assert "jane" not in text and r.rows_removed == {"landing": 1}
    assert "jane.doe@example.org.uk" in store.read_text(
        "landing/events/date=2026-03-10/export-jane.doe@example.org.jsonl"
    )
    again = erase_users(store, ["jane.doe@example.org"])
    assert again.total_removed == 0 and again.receipt_key != r.receipt_key


def test_mentions_matches_whole_field_values_only():
    ids = frozenset({"u1"})
    assert mentions('{"user_id": "u1", "x": 1}', ids)
    assert mentions('{"a": {"b": [" u1 "]}}', ids)
    assert not mentions('{"user_id": "u10"}', ids)
    assert mentions("u1,s,i1,view,2026-01-01T00:00:00Z,", ids)
    assert not mentions("u10,s,i1,view,2026-01-01T00:00:00Z,", ids)
    assert mentions('"u1,unbalanced', ids)
    assert mentions('{"user_id": "u1", broken', ids)
    assert not mentions("", ids)


def test_cli_and_dagster_job_erase_the_same_way(tmp_path, monkeypatch):
    """``relevance erase-user`` and the ``erase_users`` job (with ids from a request object, deleted after
    use) both erase and write a receipt; retrain=true makes the sensor request the retrain job once."""
    from relevance_assets.automation import FRESHNESS_POLICIES
    from relevance_assets.defs.privacy.erasure import (
        erase_users_job,
        erasure_retrain_sensor,
        retrain_after_erasure,
        wants_retrain,
    )
    from relevance_assets.resources import StorageResource
    from relevance_cli.main import main

    home = tmp_path / "h"
    store = LocalStore(home)
    lines = [json.dumps(_ev(u, "i1", "view", _ts(DAY_B, 1))) for u in ("a-1", "b-2", "c-3")]
    store.write_text(f"landing/events/date={DAY_B}/x.jsonl", "\n".join(lines) + "\n")

    monkeypatch.delenv("RELEVANCE_PSEUDONYM_KEY", raising=False)
    assert main(["erase-user", "a-1", "--home", str(home)]) == 0
    assert '"a-1"' not in store.read_text(f"landing/events/date={DAY_B}/x.jsonl")

    store.write_text("erasure/requests/ticket-7.json", json.dumps({"user_ids": ["b-2"]}))
    with dg.instance_for_test() as instance:
        res = erase_users_job.execute_in_process(
            run_config={
                "ops": {
                    "erase_user_data": {
                        "config": {"request_key": "erasure/requests/ticket-7.json", "retrain": True}
                    }
                }
            },
            resources={"storage": StorageResource(base_uri=str(home))},
            instance=instance,
        )
        assert res.success
        out = res.output_for_node("erase_user_data")
        assert out["rows_removed"]["landing"] == 1 and out["retrain"] is True
        assert not store.exists("erasure/requests/ticket-7.json")
        assert "b-2" not in json.dumps(instance.get_run_by_id(res.run_id).run_config)
        text = store.read_text(f"landing/events/date={DAY_B}/x.jsonl")
        assert '"b-2"' not in text and '"c-3"' in text
        assert res.run_id in store.read_text(out["receipt_key"])

        run = instance.get_run_by_id(res.run_id)
        assert wants_retrain(run)
        success = [
            e
            for e in instance.all_logs(res.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_SUCCESS"
        ]
        ctx = dg.build_run_status_sensor_context(
            sensor_name=erasure_retrain_sensor.name,
            dagster_instance=instance,
            dagster_run=run,
            dagster_event=success[-1].dagster_event,
        )
        req = erasure_retrain_sensor(ctx)
        assert isinstance(req, dg.RunRequest) and req.run_key == f"erasure-retrain:{res.run_id}"
        assert [t.job_name for t in erasure_retrain_sensor.targets] == [retrain_after_erasure.name]
        # the retrain selection names real assets of the graph (FRESHNESS_POLICIES lists every one)
        selected = retrain_after_erasure.selection.operands
        keys = {k.to_user_string() for op in selected for k in getattr(op, "selected_keys", [])}
        keys |= {
            k.to_user_string()
            for op in selected
            for k in getattr(getattr(op, "child", None), "selected_keys", [])
        }
        assert keys == {"stg_events", "item_popularity", "daily_event_stats", "two_tower_model"}
        assert keys <= set(FRESHNESS_POLICIES)

        # without retrain: the sensor skips
        res2 = erase_users_job.execute_in_process(
            run_config={"ops": {"erase_user_data": {"config": {"user_ids": ["c-3"]}}}},
            resources={"storage": StorageResource(base_uri=str(home))},
            instance=instance,
        )
        run2 = instance.get_run_by_id(res2.run_id)
        ev2 = [
            e
            for e in instance.all_logs(res2.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_SUCCESS"
        ]
        ctx2 = dg.build_run_status_sensor_context(
            sensor_name=erasure_retrain_sensor.name,
            dagster_instance=instance,
            dagster_run=run2,
            dagster_event=ev2[-1].dagster_event,
        )
        assert isinstance(erasure_retrain_sensor(ctx2), dg.SkipReason)
    assert len(store.list(RECEIPTS_PREFIX)) == 3


def test_cli_asks_the_service_to_forget_and_reports_a_missing_endpoint(tmp_path):
    """``--service-url``: the ids go to the service in the body (token in the header), never in the URL
    or the receipt; a service without the endpoint makes the command exit 1 after the lake erasure."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from relevance_cli.main import main
    from relevance_core.erasure_requests import SERVICE_ERASE_PATH

    seen: list[tuple[str, str | None, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body))
            if self.server.has_endpoint and self.path == SERVICE_ERASE_PATH:
                payload = json.dumps({"requested": len(body["user_ids"]), "forgotten": 1}).encode()
                self.send_response(200)
            else:
                payload = b"{}"
                self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.has_endpoint = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    home = tmp_path / "h"
    store = LocalStore(home)
    store.write_text(
        f"landing/events/date={DAY_B}/x.jsonl", json.dumps(_ev("zed-9", "i1", "view", _ts(DAY_B, 1))) + "\n"
    )
    try:
        assert (
            main(["erase-user", "zed-9", "--home", str(home), "--service-url", url, "--token", "s3cret"]) == 0
        )
        assert seen[-1] == (SERVICE_ERASE_PATH, "Bearer s3cret", {"user_ids": ["zed-9"]})
        receipt = store.read_text(store.list(RECEIPTS_PREFIX)[-1])
        assert "zed-9" not in receipt and "s3cret" not in receipt
        assert json.loads(receipt)["extra"]["service"] == {
            "status": "ok",
            "http_status": 200,
            "requested": 1,
            "forgotten": 1,
        }
        server.has_endpoint = False
        assert (
            main(["erase-user", "zed-9", "--home", str(home), "--service-url", url, "--token", "s3cret"]) == 1
        )
        receipts = sorted(store.list(RECEIPTS_PREFIX))
        assert json.loads(store.read_text(receipts[-1]))["extra"]["service"]["status"] == "missing_endpoint"
    finally:
        server.shutdown()

"""Regenerate the example landing files of ``docs/your-data.md`` (a small second-hand marketplace).

The files are committed, so nobody has to run this to follow the walk; it exists so that the examples can
be rebuilt or reshaped without hand-editing thousands of rows, and so that what they contain is explained
in code rather than guessed at. Output is byte-for-byte reproducible (fixed seed, gzip without a time
stamp; the Parquet file with the same pyarrow), so a regeneration with no change here shows no diff.

The shape is what a real classifieds site looks like, because the walk has to publish a bundle through the
same evaluation gate as any other data: users browse one category per visit, mostly near home (pick-up in
person), within their budget, with a brand they like now and then; a funnel view → click → favourite /
contact / purchase; listings that go online during the week; a few sold items; guests without a user id;
each day in another landing format (and one day as two files from two systems); and a handful of broken
rows, so that ``relevance ingest`` has something to quarantine.

    .venv/bin/python examples/make_examples.py          # rewrites examples/catalog and examples/events
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import math
import random
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from relevance_core.schemas import EVENT_COLUMNS, ITEM_COLUMNS

HERE = Path(__file__).resolve().parent
SEED = 20260302
FIRST_DAY = datetime(2026, 3, 2, tzinfo=UTC)
N_DAYS = 7
#: The shop's local time in March (Europe/Berlin before the switch to summer time): the JSON Lines export
#: writes local times with their offset; the other files write UTC.
LOCAL = timezone(timedelta(hours=1))
CITIES = ("Berlin", "Hamburg", "Munich", "Cologne")
N_USERS = 140
N_GUEST_SESSIONS = 110

#: leaf category → (brands, (model names), price range in EUR, usual conditions)
CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[float, float], tuple[str, ...]]] = {
    "Electronics > Phones > Smartphones": (
        ("Apple", "Samsung", "Google", "Fairphone"),
        ("{b} phone 128 GB", "{b} phone 256 GB, dual SIM", "{b} compact phone 64 GB", "{b} phone Pro 512 GB"),
        (90, 950),
        ("used", "like_new", "refurbished"),
    ),
    "Electronics > Computers > Laptops": (
        ("Lenovo", "Dell", "Apple", "HP"),
        ('{b} 14" laptop, 16 GB RAM', '{b} 13" ultrabook, 512 GB SSD', '{b} 15" workstation', "{b} 2-in-1"),
        (180, 1600),
        ("used", "like_new", "refurbished"),
    ),
    "Electronics > Audio > Headphones": (
        ("Sony", "Bose", "Sennheiser", "JBL"),
        ("{b} noise-cancelling headphones", "{b} wireless earbuds", "{b} studio headphones"),
        (25, 320),
        ("used", "like_new", "new"),
    ),
    "Home & Garden > Furniture > Sofas": (
        ("IKEA", "Muuto", "Hay", "Made.com"),
        ("{b} 3-seater sofa, grey", "{b} corner sofa", "{b} sofa bed", "{b} two-seater, velvet"),
        (60, 900),
        ("used", "like_new"),
    ),
    "Home & Garden > Kitchen > Coffee Machines": (
        ("DeLonghi", "Siemens", "Jura", "Sage"),
        ("{b} bean-to-cup machine", "{b} espresso machine", "{b} filter coffee maker"),
        (35, 750),
        ("used", "like_new", "refurbished", "for_parts"),
    ),
    "Sports > Bikes > City Bikes": (
        ("Gazelle", "Cube", "Trek", "Batavus"),
        ('{b} city bike 28", 7 gears', "{b} step-through bike", "{b} e-bike, 500 Wh", "{b} commuter bike"),
        (120, 2200),
        ("used", "like_new"),
    ),
    "Fashion > Shoes > Sneakers": (
        ("Nike", "Adidas", "New Balance", "Veja"),
        ("{b} sneakers size 42", "{b} running shoes size 39", "{b} leather sneakers size 44"),
        (15, 160),
        ("used", "like_new", "new"),
    ),
    "Fashion > Jackets > Outdoor Jackets": (
        ("Patagonia", "The North Face", "Jack Wolfskin", "Mammut"),
        ("{b} rain jacket, M", "{b} down jacket, L", "{b} softshell jacket, S", "{b} winter parka, XL"),
        (25, 320),
        ("used", "like_new"),
    ),
    "Kids > Toys > Building Sets": (
        ("LEGO", "Playmobil", "Brio"),
        ("{b} city set, complete", "{b} castle set", "{b} box of bricks, 2 kg", "{b} train set"),
        (8, 220),
        ("used", "like_new", "new"),
    ),
    "Books & Media > Books > Novels": (
        ("",),
        (
            "Crime novel bundle, 5 books",
            "Classic novels, hardcover",
            "Sci-fi trilogy, paperback",
            "Signed first edition",
        ),
        (4, 60),
        ("used", "like_new"),
    ),
}
ITEMS_PER_CATEGORY = 18
#: leaf category → details that tell two listings of one model apart (titles are unique in the catalog)
DETAILS: dict[str, tuple[str, ...]] = {
    "Electronics > Phones > Smartphones": ("black", "blue", "with case", "boxed"),
    "Electronics > Computers > Laptops": ("2021", "2022", "with charger", "UK keyboard"),
    "Electronics > Audio > Headphones": ("black", "silver", "with case", "boxed"),
    "Home & Garden > Furniture > Sofas": (
        "pet-free home",
        "needs cleaning",
        "with cushions",
        "like on photos",
    ),
    "Home & Garden > Kitchen > Coffee Machines": ("descaled", "with milk jug", "boxed", "needs repair"),
    "Sports > Bikes > City Bikes": ("frame 52 cm", "frame 56 cm", "with lights", "new tyres"),
    "Fashion > Shoes > Sneakers": ("white", "black", "worn twice", "with box"),
    "Fashion > Jackets > Outdoor Jackets": ("navy", "red", "olive", "black"),
    "Kids > Toys > Building Sets": ("with manual", "no box", "sealed", "ages 4+"),
    "Books & Media > Books > Novels": ("German", "English", "good condition", "some notes"),
}


def _catalog(rng: random.Random) -> list[dict]:
    """Listings with content that matters (category, brand, price, city): what the item tower learns from,
    and what lets a listing created this week be recommended before anyone has clicked it."""
    items = []
    n = 0
    for path, (brands, models, (lo, hi), conditions) in CATEGORIES.items():
        combos = [(b, m, d) for b in brands for m in models for d in DETAILS[path]]
        rng.shuffle(combos)
        for brand, model, detail in combos[:ITEMS_PER_CATEGORY]:
            n += 1
            # log-uniform prices: a category's cheap and expensive ends both exist
            price = round(math.exp(rng.uniform(math.log(lo), math.log(hi))), 0 if hi > 100 else 2)
            city = CITIES[rng.randrange(len(CITIES))]
            condition = conditions[rng.randrange(len(conditions))]
            new_this_week = rng.random() < 0.1
            if new_this_week:  # listed during the week: cold for the model, still recommendable
                created = FIRST_DAY + timedelta(days=rng.randrange(3, N_DAYS), hours=rng.randrange(6, 20))
            else:
                created = FIRST_DAY - timedelta(days=rng.randrange(2, 120), hours=rng.randrange(24))
            title = f"{model.format(b=brand).strip()}, {detail}"
            items.append(
                {
                    "item_id": f"L{1000 + n}",
                    "title": title,
                    "description": f"{title}. {condition.replace('_', ' ').capitalize()}, pick-up in {city}"
                    + (", can ship" if rng.random() < 0.3 else ""),
                    "category_path": path,
                    "price": price,
                    "brand": brand or None,
                    "location": city,
                    "condition": condition,
                    "image_url": f"https://img.example.com/listings/L{1000 + n}.jpg",
                    "seller_id": f"s{rng.randrange(1, 60):03d}",
                    "available": rng.random() > 0.04,
                    "created_at": created,
                    "_appeal": rng.lognormvariate(0.0, 0.5),
                    "_price_q": None,
                }
            )
    # the price's rank inside its category (0 cheap .. 1 dear): what a user's budget is compared with
    for path in CATEGORIES:
        group = sorted((i for i in items if i["category_path"] == path), key=lambda i: i["price"])
        for r, item in enumerate(group):
            item["_price_q"] = (r + 0.5) / len(group)
    return items


def _users(rng: random.Random) -> list[dict]:
    cats = list(CATEGORIES)
    users = []
    for u in range(1, N_USERS + 1):
        liked = rng.sample(cats, 2)
        users.append(
            {
                "user_id": f"u{u:03d}",
                "city": CITIES[rng.randrange(len(CITIES))],
                "categories": liked,
                "budget": rng.random(),
                "brands": {c: CATEGORIES[c][0][rng.randrange(len(CATEGORIES[c][0]))] for c in liked},
                "device": rng.choice(("mobile", "mobile", "desktop", "tablet")),
                "activity": rng.choice((1, 2, 2, 3, 3, 4, 5)),
            }
        )
    return users


def _affinity(user: dict | None, item: dict, city: str, budget: float) -> float:
    a = item["_appeal"]
    a *= 6.0 if item["location"] == city else 1.0
    a *= math.exp(-4.0 * abs(item["_price_q"] - budget))
    if user is not None and user["brands"].get(item["category_path"]) == item["brand"]:
        a *= 2.5
    return a


def _session(rng, items, user, start: datetime, session_id: str | None) -> list[dict]:
    """One visit: a category, a few listings chosen by affinity (no repeats), each with its funnel."""
    if user is not None and rng.random() < 0.85:
        category = rng.choice(user["categories"])
    else:
        category = rng.choice(list(CATEGORIES))
    city = user["city"] if user is not None else rng.choice(CITIES)
    budget = user["budget"] if user is not None else rng.random()
    device = user["device"] if user is not None else rng.choice(("mobile", "desktop"))
    pool = [
        i
        for i in items
        if i["category_path"] == category
        and i["created_at"] <= start
        and (i["available"] or rng.random() < 0.5)
    ]
    weights = [_affinity(user, i, city, budget) for i in pool]
    n = min(len(pool), rng.choice((2, 3, 3, 4, 4, 5, 6, 7)))
    chosen = []
    for _ in range(n):
        pick = rng.choices(range(len(pool)), weights=weights)[0]
        chosen.append(pool[pick])
        weights[pick] = 0.0
        if not any(weights):
            break
    events = []
    t = start
    for item in chosen:
        strong = item["location"] == city
        funnel = ["view"]
        if rng.random() < 0.45:
            funnel.append("click")
            if rng.random() < (0.35 if strong else 0.12):
                funnel.append("add_to_favorites")
            if rng.random() < (0.25 if strong else 0.06):
                funnel.append("contact_seller")
                if item["available"] and rng.random() < 0.3:
                    funnel.append("purchase")
        for ev in funnel:
            events.append(
                {
                    "user_id": user["user_id"] if user is not None else None,
                    "session_id": session_id,
                    "item_id": item["item_id"],
                    "event_type": ev,
                    "timestamp": t,
                    "device_type": device,
                }
            )
            t += timedelta(seconds=rng.randrange(8, 150))
    return events


def _visit_start(rng: random.Random, day: int) -> datetime:
    # local 07:00-22:59 (UTC 06:00-21:59): every event of a visit lands on the same UTC day
    return FIRST_DAY + timedelta(days=day, hours=rng.randrange(6, 22), minutes=rng.randrange(50))


def _events(rng: random.Random, items: list[dict], users: list[dict]) -> list[dict]:
    events = []
    n = 0
    for user in users:
        for _ in range(user["activity"] + rng.randrange(0, 3)):
            n += 1
            sid = f"{user['user_id']}-{n:05d}" if rng.random() < 0.9 else None  # some exports lack ids
            events += _session(rng, items, user, _visit_start(rng, rng.randrange(N_DAYS)), sid)
    for _ in range(N_GUEST_SESSIONS):
        n += 1
        events += _session(rng, items, None, _visit_start(rng, rng.randrange(N_DAYS)), f"guest-{n:05d}")
    events.sort(key=lambda e: (e["timestamp"], e["session_id"] or "", e["item_id"]))
    return events


def _iso_utc(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _csv_bytes(rows: list[dict], columns: tuple[str, ...]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else r[c] for c in columns])
    return buf.getvalue().encode()


def _jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _gzip(data: bytes) -> bytes:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as f:  # no time stamp: reproducible
        f.write(data)
    return out.getvalue()


def _csv_events(rows: list[dict]) -> bytes:
    return _csv_bytes([{**r, "timestamp": _iso_utc(r["timestamp"])} for r in rows], EVENT_COLUMNS)


def _jsonl_events(rows: list[dict]) -> bytes:
    # the app's export: local time with its offset, and no null fields (absent = null)
    out = []
    for r in rows:
        rec = {k: v for k, v in r.items() if v is not None}
        rec["timestamp"] = r["timestamp"].astimezone(LOCAL).isoformat()
        out.append(rec)
    return _jsonl_bytes(out)


def _parquet_events(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "user_id": pa.array([r["user_id"] for r in rows], pa.string()),
            "session_id": pa.array([r["session_id"] for r in rows], pa.string()),
            "item_id": pa.array([r["item_id"] for r in rows], pa.string()),
            "event_type": pa.array([r["event_type"] for r in rows], pa.string()),
            "timestamp": pa.array([r["timestamp"] for r in rows], pa.timestamp("us", tz="UTC")),
            "device_type": pa.array([r["device_type"] for r in rows], pa.string()),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


#: day index → [(file name, writer)]: each landing format, and one day delivered as two files (the web
#: shop's CSV and the app's JSON Lines) the way two systems export.
LAYOUT = {
    0: [("events.csv", _csv_events)],
    1: [("events.jsonl.gz", lambda rows: _gzip(_jsonl_events(rows)))],
    2: [("events.csv.gz", lambda rows: _gzip(_csv_events(rows)))],
    3: [("events.parquet", _parquet_events)],
    4: [("web.csv", _csv_events), ("app.jsonl.gz", lambda rows: _gzip(_jsonl_events(rows)))],
    5: [("events.jsonl.gz", lambda rows: _gzip(_jsonl_events(rows)))],
    6: [("events.csv.gz", lambda rows: _gzip(_csv_events(rows)))],
}


def _broken_rows() -> str:
    """Rows a real export has now and then; ingestion quarantines each with its reason (day 1's CSV)."""
    return (
        "u001,u001-broken,L1001,scroll,2026-03-02T10:00:00Z,mobile\n"  # unknown_event_type
        "u002,,L1002,view,yesterday,desktop\n"  # unparseable_timestamp
        "u003,,L1003,view,2026-03-03T10:00:00Z,desktop\n"  # timestamp_outside_day (belongs to 03-03)
        ",guest-broken,,view,2026-03-02T11:00:00Z,mobile\n"  # missing_item_id
    )


def write(out: Path) -> dict[str, int]:
    rng = random.Random(SEED)
    items = _catalog(rng)
    users = _users(rng)
    events = _events(rng, items, users)

    for sub in ("catalog", "events"):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / "catalog").mkdir(parents=True)
    catalog_rows = [
        {
            **{k: v for k, v in i.items() if not k.startswith("_")},
            "available": "true" if i["available"] else "false",
            "created_at": _iso_utc(i["created_at"]),
        }
        for i in items
    ]
    catalog = _csv_bytes(catalog_rows, ITEM_COLUMNS)
    # a listing without a title: quarantined (missing_title), the other listings go through
    catalog += b"L9999,,A listing the export lost its title for,Kids > Toys > Building Sets,5,,Berlin,used,,s001,true,\n"
    (out / "catalog" / "items-2026-03-08.csv").write_bytes(catalog)

    by_day: dict[int, list[dict]] = {}
    for e in events:
        by_day.setdefault((e["timestamp"] - FIRST_DAY).days, []).append(e)
    counts = {"items": len(items), "events": len(events)}
    for day, files in LAYOUT.items():
        rows = by_day.get(day, [])
        d = out / "events" / f"date={(FIRST_DAY + timedelta(days=day)).date().isoformat()}"
        d.mkdir(parents=True)
        if len(files) == 1:
            parts = [rows]
        else:  # two systems: the web shop's visits in one file, the app's in the other
            parts = [
                [r for r in rows if r["device_type"] == "desktop"],
                [r for r in rows if r["device_type"] != "desktop"],
            ]
        for (name, writer), part in zip(files, parts, strict=True):
            data = writer(part)
            if day == 0:
                # ... and one event sent twice (an export retried): kept once, counted as a duplicate
                data += _broken_rows().encode() + _csv_events(part[:1]).split(b"\n", 1)[1]
            (d / name).write_bytes(data)
        counts[d.name] = len(rows)
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE, help="folder to write catalog/ and events/ into")
    args = p.parse_args()
    print(json.dumps(write(args.out)))


if __name__ == "__main__":
    main()

"""Daily users and locations report files shaped like tenants' real CRM exports, for the sandbox SFTP server.

Deterministic per (seed, day). Each file carries what real exports carry: quoted commas, an occasional
quoted newline, a few invalid emails, and one row with a value that does not parse, so the demo shows rejects.
"""

import csv
import io
import random
from datetime import UTC, date, datetime, timedelta

USERS_COLUMNS = ("user_id", "email", "company_name", "first_name", "last_name", "created_at", "updated_at")
LOCATIONS_COLUMNS = (
    "location_id",
    "location_name",
    "address",
    "city",
    "region",
    "country",
    "postal_code",
    "latitude",
    "longitude",
)
FIRST = ("Ann", "Bob", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Inés", "Jonas")
LAST = ("Lee", "Müller", "O'Brien", "Nakamura", "García", "Smith", "Kowalski", "Dubois")
COMPANIES = ("Acme, Inc.", "Globex", "Initech", "Umbrella Corp", "Stark Industries", "Wayne Enterprises")
CITIES = (
    ("Berlin", "BE", "DE", "10115", 52.52, 13.405),
    ("Paris", "IDF", "FR", "75001", 48.8566, 2.3522),
    ("Austin", "TX", "US", "73301", 30.2672, -97.7431),
    ("Osaka", "27", "JP", "530-0001", 34.6937, 135.5023),
)


def _csv(header: tuple[str, ...], rows: list[list[object]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def users_report(day: date, *, seed: str, n_users: int = 40) -> bytes:
    """Users known on `day`: ids grow over time, so later files update earlier users and add new ones."""
    rng = random.Random(f"{seed}:users:{day.isoformat()}")
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    rows: list[list[object]] = []
    for i in range(1, n_users + day.day % 5 + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first}.{last}{i}@example.com".lower().replace("'", "")
        if rng.random() < 0.03:
            email = email.replace("@", " at ")
        company = rng.choice(COMPANIES)
        if rng.random() < 0.05:
            company = f"{company}\nEMEA division"
        created = start - timedelta(days=400 - i)
        rows.append([f"U{i:05d}", email, company, first, last, created.isoformat(), start.isoformat()])
    rows[rng.randrange(len(rows))][5] = "31/02/2024"  # an impossible date: lands in crm.users_rejects
    return _csv(USERS_COLUMNS, rows)


def locations_report(day: date, *, seed: str, n_locations: int = 8) -> bytes:
    rng = random.Random(f"{seed}:locations:{day.isoformat()}")
    rows: list[list[object]] = []
    for i in range(1, n_locations + 1):
        city, region, country, postal, lat, lon = rng.choice(CITIES)
        rows.append(
            [
                f"L{i:03d}",
                f"{city} store {i}",
                f"{rng.randint(1, 200)} Main Street, Unit {i}",
                city,
                region,
                country,
                postal,
                round(lat + rng.uniform(-0.05, 0.05), 5),
                round(lon + rng.uniform(-0.05, 0.05), 5),
            ]
        )
    rows[rng.randrange(len(rows))][7] = "n/a"  # an unparseable coordinate: lands in crm.locations_rejects
    return _csv(LOCATIONS_COLUMNS, rows)

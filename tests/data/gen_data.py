#!/usr/bin/env python3
"""Deterministic synthetic CRM data for audience-activation tests and benchmarks.

Writes Hive-partitioned Parquet:
  OUT/customers/dt=YYYY-MM-DD/part-00000.parquet   one full snapshot per day
  OUT/orders/dt=YYYY-MM-DD/part-00000.parquet      that day's orders

The PII is deliberately messy, the way real CRM exports are: mixed case, stray
whitespace, several phone formats, national phone numbers beside a country
column, names with accents and punctuation, US zips that lost a leading zero,
placeholder e-mails, nulls.  Day over day a small share of customers change
(consent withdrawn, value moves, new sign-ups), so audiences drift and
add/remove diffs are non-trivial.

Usage: gen_data.py OUT [--customers N] [--days D] [--orders-per-day M] [--seed S]
       [--end 2026-11-25]
Memory stays near 1 GiB whatever N is: customers are made 500,000 at a time.
Needs: numpy, pyarrow (in tests/requirements.txt).

This is the project's copy, used by the tests (tests/common/mod.rs generates
their data with it), so that they need nothing beside the clone; the
benchmark's is ../shared/bench/gen_data.py.  The two write the same data:
change neither without the other.
"""
import argparse
import datetime as dt
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FIRST = ["james", "mary", "john", "patricia", "robert", "jennifer", "michael", "linda",
         "david", "elizabeth", "josé", "zoë", "françois", "søren", "anna-lena", "o'neil",
         "mohammed", "wei", "yuki", "priya", "chloé", "björn", "łukasz", "renée", "jürgen",
         "ana maría", "jean-luc", "siobhán", "dmitri", "aïsha"]
LAST = ["smith", "johnson", "williams", "brown", "jones", "garcía", "miller", "davis",
        "müller", "o'brien", "smith-jones", "nguyen", "kim", "patel", "rossi", "dubois",
        "van der berg", "łopez", "schäfer", "d'angelo", "mcdonald", "núñez", "kowalski",
        "yamamoto", "andersson", "øvergaard", "st. john", "de la cruz", "björk", "chen"]
DOMAINS = ["gmail.com", "googlemail.com", "yahoo.com", "hotmail.com", "outlook.com",
           "icloud.com", "aol.com", "example.org", "proton.me", "gmx.de", "web.de",
           "orange.fr", "btinternet.com", "acme-corp.com", "uni-example.edu"]
DOMAIN_P = np.array([30, 3, 10, 8, 8, 7, 2, 4, 2, 4, 3, 3, 3, 8, 5], dtype=float)
COUNTRIES = ["US", "GB", "DE", "FR", "CA", "BR", "JP", "IN", "AU", "ES"]
COUNTRY_P = np.array([55, 10, 8, 6, 6, 4, 3, 3, 3, 2], dtype=float)
DIAL = {"US": "1", "GB": "44", "DE": "49", "FR": "33", "CA": "1", "BR": "55",
        "JP": "81", "IN": "91", "AU": "61", "ES": "34"}
CITIES = {"US": ["New York", "Los Angeles", "Chicago", "Boston", "Seattle", "Austin"],
          "GB": ["London", "Manchester", "Edinburgh"], "DE": ["Berlin", "München", "Köln"],
          "FR": ["Paris", "Lyon", "Saint-Étienne"], "CA": ["Toronto", "Montréal", "Vancouver"],
          "BR": ["São Paulo", "Rio de Janeiro"], "JP": ["Tokyo", "Osaka"],
          "IN": ["Mumbai", "Bengaluru"], "AU": ["Sydney", "Melbourne"], "ES": ["Madrid", "A Coruña"]}
STATES_US = ["NY", "CA", "IL", "MA", "WA", "TX", "ny", "Calif.", "Massachusetts"]
TIERS = ["bronze", "silver", "gold", "platinum"]
CATEGORIES = ["apparel", "electronics", "home", "beauty", "grocery", "toys", "sports"]


def pick(rng, values, n, p=None):
    idx = rng.choice(len(values), size=n, p=None if p is None else p / p.sum())
    return np.array(values, dtype=object)[idx]


def vary_case(rng, s):
    """Randomly upper-case, title-case or leave strings as they are."""
    r = rng.random(len(s))
    out = s.copy()
    up = r < 0.08
    title = (r >= 0.08) & (r < 0.45)
    out[up] = [x.upper() for x in s[up]]
    out[title] = [x.title() for x in s[title]]
    return out


def pad(rng, s, share):
    """Stray whitespace around a share of the values."""
    r = rng.random(len(s))
    out = s.copy()
    m = r < share
    ws = np.array([" ", "  ", "\t", " \u00a0"], dtype=object)[rng.integers(0, 4, m.sum())]
    out[m] = ws + s[m] + np.array([" ", "", "  "], dtype=object)[rng.integers(0, 3, m.sum())]
    return out


def make_customers(n, seed, first_id):
    rng = np.random.default_rng([seed, first_id])
    cid = np.arange(first_id, first_id + n, dtype=np.int64)
    country = pick(rng, COUNTRIES, n, COUNTRY_P)
    first = pick(rng, FIRST, n)
    last = pick(rng, LAST, n)
    # e-mail local part: first.last, firstlast+digits, f.last, with plus tags now and then
    num = rng.integers(0, 10000, n).astype(str).astype(object)
    style = rng.integers(0, 4, n)
    simple = lambda a: np.array([x.replace(" ", "").replace("'", "") for x in a], dtype=object)
    f_ascii, l_ascii = simple(first), simple(last)
    local = np.where(style == 0, f_ascii + "." + l_ascii,
             np.where(style == 1, f_ascii + l_ascii + num,
              np.where(style == 2, np.array([x[:1] for x in f_ascii], dtype=object) + "." + l_ascii + num,
                       l_ascii + "_" + f_ascii + num)))
    local = local + "." + cid.astype(str).astype(object)   # keeps e-mails unique
    plus = rng.random(n) < 0.03
    local[plus] = local[plus] + "+" + pick(rng, ["promo", "shop", "news"], plus.sum())
    domain = pick(rng, DOMAINS, n, DOMAIN_P)
    email = vary_case(rng, local + "@" + domain)
    email = pad(rng, email, 0.05)
    r = rng.random(n)
    email = email.astype(object)
    email[(r >= 0.0) & (r < 0.01)] = pick(rng, ["n/a", "", "none", "noemail@", "unknown"], ((r >= 0.0) & (r < 0.01)).sum())
    email_null = (r >= 0.01) & (r < 0.04)

    # phones: national or international formats, matching the country most of the time
    digits = rng.integers(2_000_000_000, 9_999_999_999, n).astype(str).astype(object)
    nine = np.isin(country, ["FR", "AU", "ES"])     # national numbers of 9 digits there
    digits[nine] = np.array([d[:9] for d in digits[nine]], dtype=object)
    dial = np.array([DIAL[c] for c in country], dtype=object)
    # a national number that begins with its own country code, or with 9 (a carrier prefix in some
    # countries), is ambiguous even for a phone library: begin those with 7 instead
    clash = np.array([d.startswith(k) or d[0] == "9" for d, k in zip(digits, dial)])
    digits[clash] = "7" + np.array([d[1:] for d in digits[clash]], dtype=object)
    fmt = rng.integers(0, 7, n)
    # unambiguous for a phone library: country code without '+' only in North America (11 digits
    # starting with 1), the international prefix 00 only where it is the dialling prefix
    nanp = (country == "US") | (country == "CA")
    idd00 = np.isin(country, ["GB", "DE", "FR", "ES", "IN"])
    fmt = np.where((fmt == 4) & ~nanp, 6, fmt)
    fmt = np.where((fmt == 5) & ~idd00, 3, fmt)
    d3, d6 = np.array([d[:3] for d in digits], dtype=object), np.array([d[3:6] for d in digits], dtype=object)
    d10 = np.array([d[6:] for d in digits], dtype=object)
    phone = np.where(fmt == 0, "(" + d3 + ") " + d6 + "-" + d10,
             np.where(fmt == 1, d3 + "-" + d6 + "-" + d10,
              np.where(fmt == 2, d3 + "." + d6 + "." + d10,
               np.where(fmt == 3, "+" + dial + " " + d3 + " " + d6 + " " + d10,
                np.where(fmt == 4, dial + digits,
                 np.where(fmt == 5, "00" + dial + digits, "+" + dial + "-" + digits))))))
    phone = pad(rng, phone.astype(object), 0.03)
    phone_null = rng.random(n) < 0.20

    city = np.array([CITIES[c][i % len(CITIES[c])] for c, i in zip(country, rng.integers(0, 6, n))], dtype=object)
    state = np.where(country == "US", pick(rng, STATES_US, n), None)
    zip5 = rng.integers(501, 99950, n)
    zipc = np.where(country == "US",
            np.where(rng.random(n) < 0.15, zip5.astype(str).astype(object),            # lost leading zero
              np.where(rng.random(n) < 0.3,
                       np.char.zfill(zip5.astype(str), 5).astype(object) + "-" + np.char.zfill(rng.integers(0, 9999, n).astype(str), 4).astype(object),
                       np.char.zfill(zip5.astype(str), 5).astype(object))),
            np.where(country == "GB", pick(rng, ["SW1A 1AA", "M1 1AE", "EH1 1YZ", "sw1a1aa"], n),
                     np.char.zfill((zip5 % 100000).astype(str), 5).astype(object)))
    country_out = pad(rng, np.where(rng.random(n) < 0.1, np.char.lower(country.astype(str)).astype(object), country), 0.02)

    dob = (np.datetime64("1940-01-01") + rng.integers(0, 365 * 65, n).astype("timedelta64[D]"))
    gender = pick(rng, ["M", "F", "m", "f", "Female", "male", "X", None], n,
                  np.array([30, 30, 5, 5, 10, 8, 2, 10], dtype=float))
    maid = np.array([f"{a:08x}-{b:04x}-4{c:03x}-a{d:03x}-{e:012x}" for a, b, c, d, e in zip(
        rng.integers(0, 2**32, n, dtype=np.uint64), rng.integers(0, 2**16, n), rng.integers(0, 2**12, n),
        rng.integers(0, 2**12, n), rng.integers(0, 2**48, n, dtype=np.uint64))], dtype=object)
    upper_maid = rng.random(n) < 0.3
    maid[upper_maid] = [m.upper() for m in maid[upper_maid]]
    maid_null = rng.random(n) < 0.4

    return {
        "customer_id": cid,
        "email": np.where(email_null, None, email),
        "phone": np.where(phone_null, None, phone),
        "first_name": pad(rng, vary_case(rng, first), 0.04),
        "last_name": pad(rng, vary_case(rng, last), 0.04),
        "city": city, "state": state, "zip": zipc, "country": country_out,
        "date_of_birth": dob, "gender": gender,
        "mobile_ad_id": np.where(maid_null, None, maid),
        "lifetime_value": np.round(rng.lognormal(5.0, 1.3, n), 2),
        "loyalty_tier": pick(rng, TIERS, n, np.array([50, 30, 15, 5], dtype=float)),
        "marketing_consent": rng.random(n) < 0.85,
        "ad_personalization_consent": rng.random(n) < 0.80,
        "signup_day": rng.integers(0, 2000, n),
    }


def drift(cols, day, seed, chunk):
    """Small day-over-day changes: value grows, consent flips, tiers move."""
    rng = np.random.default_rng([seed, 7919, chunk, day])
    n = len(cols["customer_id"])
    ch = rng.random(n) < 0.01
    cols["lifetime_value"] = np.where(ch, np.round(cols["lifetime_value"] * rng.uniform(0.8, 1.6, n), 2), cols["lifetime_value"])
    flip = rng.random(n) < 0.002
    cols["marketing_consent"] = np.where(flip, ~cols["marketing_consent"], cols["marketing_consent"])
    tier = rng.random(n) < 0.003
    cols["loyalty_tier"] = np.where(tier, pick(rng, TIERS, n), cols["loyalty_tier"])


def table(cols, snapshot_day, visible):
    ts = pa.scalar(dt.datetime.combine(snapshot_day, dt.time(2, 0)), type=pa.timestamp("us"))
    t = pa.table({k: v for k, v in cols.items() if k != "signup_day"}).filter(pa.array(visible))
    return t.append_column("updated_at", pa.array(np.full(t.num_rows, np.datetime64(ts.as_py(), "us"))))


def write(t, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(t, path, compression="zstd", row_group_size=256 * 1024)


CHUNK = 500_000   # customers generated at a time; fixed, so the data depends only on the arguments


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--orders-per-day", type=int, default=None, help="default: customers/10")
    ap.add_argument("--end", default="2026-11-25", help="last snapshot date")
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args()
    orders_per_day = a.orders_per_day if a.orders_per_day is not None else max(a.customers // 10, 1)
    end = dt.date.fromisoformat(a.end)
    days = [end - dt.timedelta(days=a.days - 1 - d) for d in range(a.days)]
    visible_total = [0] * a.days
    for c, first in enumerate(range(1, a.customers + 1, CHUNK)):
        cols = make_customers(min(CHUNK, a.customers + 1 - first), a.seed, first)
        for d, day in enumerate(days):
            if d:
                drift(cols, d, a.seed, c)
            # customers sign up over time: some appear only on later snapshots
            visible = cols["signup_day"] >= (a.days - 1 - d) * 10
            visible_total[d] += int(visible.sum())
            write(table(cols, day, visible), os.path.join(a.out, "customers", f"dt={day}", f"part-{c:05d}.parquet"))
        print(f"customers {first + len(cols['customer_id']) - 1}/{a.customers}", flush=True)
    for d, day in enumerate(days):
        for c, start in enumerate(range(0, orders_per_day, CHUNK * 2)):
            m = min(CHUNK * 2, orders_per_day - start)
            rng = np.random.default_rng([a.seed, 104729, d, c])
            base = np.datetime64(day.isoformat()).astype("datetime64[us]")
            orders = pa.table({
                "order_id": np.arange(d * orders_per_day + start + 1, d * orders_per_day + start + m + 1, dtype=np.int64),
                "customer_id": (rng.zipf(1.3, m) % a.customers + 1).astype(np.int64),
                "order_ts": base + rng.integers(0, 86_400_000_000, m).astype("timedelta64[us]"),
                "amount": np.round(rng.lognormal(3.5, 1.0, m), 2),
                "category": pick(rng, CATEGORIES, m),
            })
            write(orders, os.path.join(a.out, "orders", f"dt={day}", f"part-{c:05d}.parquet"))
        print(f"dt={day}: {visible_total[d]} customers, {orders_per_day} orders", flush=True)


if __name__ == "__main__":
    main()

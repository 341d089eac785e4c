#!/usr/bin/env python3
"""activator's normalization against the platforms' official normalizers, value by value.

    compare.py ACTIVATOR DATA [--profile google|uid2] [--examples N]

ACTIVATOR is the activator binary; DATA a folder of tests/data/gen_data.py (customers/dt=*/
*.parquet). Every distinct e-mail, phone (with its row's country) and name of the data, variants
of them (case, white space, decomposed accents, Gmail dots and tags) and a list of hostile values
go through `activator hash` and through the official normalizer of the profile:

  google  google-ads-datamanager-util (Google's Data Manager library): Formatter's
          process_email_address, process_phone_number, process_given_name, process_family_name
  uid2    uid2-client (The Trade Desk's UID2 SDK): normalize_and_hash_email,
          normalize_and_hash_phone

Per value one outcome: both accept and hash the same (agree); both refuse; only the official one
accepts (counted, not a failure: the spec is stricter in places, e.g. an e-mail domain needs a
`.`); a documented deviation of ours (each named below, citing shared/spec/identifiers.md); or a
failure: both accept and the hashes differ (disagree), or activator accepts what the official
normalizer refuses (activator_only). The exit status is 1 on any failure, with up to N examples
of each (synthetic data and hand-made values, so printing them is fine).

Phones: neither official library parses phone numbers. UID2's SDK takes E.164 as it is (`+` and
10 to 15 digits) and Google's Formatter keeps the digits of anything and prefixes a `+`, so for a
national number (`(415) 555-0101`) neither is a reference. Every phone activator accepts is
therefore checked by feeding its E.164 output to the official normalizer (it must accept it and
hash the same), and raw values that are already E.164 by shape are also compared as they are.
"""
import argparse
import base64
import glob
import json
import os
import re
import subprocess
import sys
import unicodedata
from collections import Counter, defaultdict

import pyarrow.parquet as pq
import uid2_client
from google.ads.datamanager_util import Encoding, Formatter

GOOGLE = Formatter()

# --------------------------------------------------------------------------------------------
# The official normalizers: (normalized, hash) or None when they refuse the value (ValueError,
# which both libraries raise on invalid input; anything else is a bug here and propagates).


def google_official(kind, value):
    try:
        if kind == "email":
            return GOOGLE.format_email_address(value), GOOGLE.process_email_address(value, Encoding.HEX)
        if kind == "phone":
            return GOOGLE.format_phone_number(value), GOOGLE.process_phone_number(value, Encoding.HEX)
        if kind == "first_name":
            return GOOGLE.format_given_name(value), GOOGLE.process_given_name(value, Encoding.HEX)
        if kind == "last_name":
            return GOOGLE.format_family_name(value), GOOGLE.process_family_name(value, Encoding.HEX)
    except ValueError:
        return None
    raise AssertionError(kind)


def uid2_official(kind, value):
    try:
        if kind == "email":
            return uid2_client.normalize_email_string(value), uid2_client.normalize_and_hash_email(value)
        if kind == "phone":
            # The SDK normalizes no phone: it checks that the value is E.164 and hashes it as is.
            return value, uid2_client.normalize_and_hash_phone(value)
    except ValueError:
        return None
    raise AssertionError(kind)


OFFICIAL = {"google": google_official, "uid2": uid2_official}
KINDS = {"google": ["email", "phone", "first_name", "last_name"], "uid2": ["email", "phone"]}

# --------------------------------------------------------------------------------------------
# The spec's common cleaning (spec, "Common cleaning"): NFC, then trim Unicode white space (the
# White_Space property of Unicode's PropList.txt, which Rust's char::is_whitespace follows) and
# U+200B, U+FEFF, and U+001C..U+001F (Python's str.strip takes those for white space too, and
# activator follows it). str.strip does not trim U+200B or U+FEFF, so it is not used here.
WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
               + "\u2028\u2029\u202f\u205f\u3000"
               # The information separators, which activator trims as Python's str.strip does
               # (and Google's formatter with it).
               + "\x1c\x1d\x1e\x1f")
TRIMMED = WHITE_SPACE + "\u200b\ufeff"


def spec_clean(value):
    return unicodedata.normalize("NFC", value).strip(TRIMMED)


HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# E.164 by shape: `+` and ASCII digits only. (UID2's SDK checks digits with str.isdigit, which
# lets fullwidth and other scripts' digits through and hashes them as they are; such a value is
# not E.164, no platform could match its hash, and it is not a reference.)
E164 = re.compile(r"\+[0-9]+")
# Google's Formatter drops every non-digit, so for it an international number written with
# spaces, dots or hyphens between digit groups is as good as E.164. Parentheses are left out:
# `+44 (0)20 …` marks a trunk prefix that the Formatter would keep as a digit.
INTERNATIONAL = re.compile(r"\+[0-9]+(?:[ .\-][0-9]+)*")


def raw_comparable_phone(profile, cleaned):
    if profile == "google":
        return INTERNATIONAL.fullmatch(cleaned) is not None
    return E164.fullmatch(cleaned) is not None


def trunk_prefix_dropped(official_normalized, activator_normalized):
    """Whether activator's E.164 is the official one without a `0` right after the country code
    (`+44 020 7946 0958` -> `+442079460958`)."""
    r = re.sub(r"\D", "", official_normalized)
    a = activator_normalized.lstrip("+")
    return any(r == a[:k] + "0" + a[k:] for k in (1, 2, 3))


def pre_hashed_hash(profile, hex64):
    return hex64.lower() if profile == "google" else base64.b64encode(bytes.fromhex(hex64)).decode()


# --------------------------------------------------------------------------------------------
# activator hash, in batches.

BATCH_VALUES = 500
BATCH_BYTES = 90_000


def activator_hash(binary, profile, kind, country, values):
    """One result per value: {"normalized", "hash"} or {"invalid"}."""
    results = []
    start = 0
    while start < len(values):
        end, size = start, 0
        while end < len(values) and end - start < BATCH_VALUES and size < BATCH_BYTES:
            size += len(values[end].encode()) + 1
            end += 1
        cmd = [binary, "hash", "--profile", profile, "--kind", kind]
        if country is not None:
            cmd += ["--country", country]
        # `--`: values may begin with a hyphen.
        cmd += ["--"] + values[start:end]
        out = subprocess.run(cmd, capture_output=True, check=False)
        if out.returncode != 0:
            sys.exit(f"activator hash --profile {profile} --kind {kind} exited {out.returncode}:\n"
                     + out.stderr.decode(errors="replace"))
        lines = out.stdout.decode().splitlines()
        if len(lines) != end - start:
            sys.exit(f"activator hash printed {len(lines)} lines for {end - start} values")
        for line in lines:
            r = json.loads(line)
            if r.get("profile") != profile or r.get("kind") != kind:
                sys.exit(f"unexpected line from activator hash: {line}")
            if "fields" in r:
                sys.exit(f"{profile} {kind}: more than one field: {line}")
            results.append(r)
        start = end
    return results


# --------------------------------------------------------------------------------------------
# The sample.


def load_data(data):
    files = sorted(glob.glob(os.path.join(data, "customers", "dt=*", "*.parquet")))
    if not files:
        sys.exit(f"no customers/dt=*/*.parquet under {data}")
    emails, phones, first, last = set(), set(), set(), set()
    for f in files:
        t = pq.read_table(f, columns=["email", "phone", "first_name", "last_name", "country"])
        for row in t.to_pylist():
            if row["email"] is not None:
                emails.add(row["email"])
            if row["phone"] is not None:
                phones.add((row["country"], row["phone"]))
            if row["first_name"] is not None:
                first.add(row["first_name"])
            if row["last_name"] is not None:
                last.add(row["last_name"])
    return sorted(emails), sorted(phones, key=lambda p: (p[0] or "", p[1])), sorted(first), sorted(last)


def gmail_variant(email, domain):
    """The local part with dots between its letters and a `+tag`, at a Google domain."""
    local = email.strip().split("@")[0]
    return ".".join(local[i:i + 3] for i in range(0, len(local), 3)) + "+Tag.x@" + domain


# Each generated e-mail and name also goes in with each of these changes.
TEXT_VARIANTS = [
    str.upper,
    str.title,
    lambda s: "\u00a0" + s + "\u00a0",                   # no-break space
    lambda s: "\u200b" + s + "\ufeff",                   # zero-width space, byte order mark
    lambda s: "\t" + s + " \r\n",
    lambda s: "\u3000" + s + "\u2003",                   # ideographic space, em space
    lambda s: unicodedata.normalize("NFD", s),            # decomposed accents
]
EMAIL_VARIANTS = TEXT_VARIANTS + [
    lambda s: gmail_variant(s, "gmail.com"),
    lambda s: gmail_variant(s, "GoogleMail.COM"),
    lambda s: " " + gmail_variant(s, "GMAIL.com") + " ",
]


def phone_variants(phone):
    out = ["\u00a0" + phone + "\u200b", "\t" + phone]
    s = phone.strip(TRIMMED)
    if s.startswith("+") or s.startswith("00"):
        # The same number in E.164 form: what UID2's SDK takes as it is.
        out.append("+" + re.sub(r"\D", "", s[2:] if s.startswith("00") else s))
    return out


HOSTILE_EMAILS = [
    # capitals beyond ASCII: UID2 keeps them, Google lowercases them
    "ØYSTEIN@Example.COM", "Élodie.Dupont@Exemple.FR", "ÅSA.ÖBERG@EXAMPLE.SE", "ΟΔΥΣΣΕΥΣ@example.gr",
    "ΣΑΣ@example.gr", "İSTANBUL@example.com.tr", "ẞTRASSE@Example.DE", "ǅEMAL@example.com",
    "KELVIN\u212a@example.com", "\u2126mega@example.com", "bücher@bücher.de", "山田@例え.jp",
    "e\u0301lodie@example.fr", "E\u0301LODIE@EXAMPLE.FR",
    # white space around and inside
    " john@example.com ", "\u00a0john@example.com\u00a0", "\u200bjohn@example.com\u200b",
    "\ufeffjohn@example.com", "\tjohn@example.com\t", "\njohn@example.com\r\n", "\u3000john@example.com",
    "\u2028john@example.com\u2029", "\u0085john@example.com", "john @example.com", "john@ example.com",
    "jo hn@example.com", "jo\u00a0hn@example.com", "jo\u200bhn@example.com", "jo\thn@example.com",
    "john@example.com \u00a0", "  \u00a0 ",
    # ASCII separators: Python's str.isspace (Google's `\s`) calls U+001C..U+001F white space,
    # Unicode's White_Space does not
    "a\x1fb@example.com", "\x1fa@example.com", "a@example.com\x1c",
    # Gmail and Googlemail dots and tags
    "John.Smith+news@GMail.com", "john.smith@gmail.com", "JOHN.SMITH@GMAIL.COM", "j.o.h.n+a+b@googlemail.com",
    "J.Smith+X@GoogleMail.Com", "john+@gmail.com", "+news@gmail.com", "...@gmail.com", ".+x@gmail.com",
    "+@gmail.com", ".@googlemail.com", "john.smith@gmail.com.", "john.smith@gmail.co", "john.smith@mail.gmail.com",
    "john..smith+a.b@gmail.com", "user+tag@example.com", "user.name+tag@example.com",
    # shape
    "@example.com", "john@", "john", "john@@example.com", "jo@hn@example.com", "john@example", "john@.com",
    "john@com.", "a@b.c", "a@.", "@", "n/a", "none", "noemail@", "unknown", "-john@example.com", "--help",
    # quotes and apostrophes
    "\"john smith\"@example.com", "\"john\"@example.com", "o'brien@example.ie", "O'Brien@Example.IE",
    "d’angelo@example.it", "john\"@example.com",
    # already hashed (spec, "Already-hashed input")
    "a" * 64, "ABCDEF0123456789" * 4, " " + "0123456789abcdef" * 4 + "\u00a0", "g" * 64, "a" * 63,
    "",
]

HOSTILE_NAMES = [
    "O'Brien", "d'Angelo", "D’Angelo", "St. John", "Anna-Lena", "Ana María", "DE LA CRUZ", "van der Berg",
    "ΟΔΥΣΣΕΥΣ", "ΟΔΥΣΣΕΥΣ-Α", "Σ", "ΣΑΣ ΣΑΣ", "ΑΣ.", "Α.Σ", "ΑΣ'Α", "ΑΣ\u0301", "ΑΣ\u0345",
    "İsmail", "ISMAİL", "ẞTRASSE", "Ǆ", "ǅemal", "Øvergaard", "ØVERGAARD", "ŁUKASZ", "ÅSA", "\u212bsa",
    "\u2126", "\u212aelvin", "Ⅻ", "ﬀ", "山田", "Ꭰ", "ꭰ", "ᏸ",
    "Rene\u0301e", "RENE\u0301E", "Jose\u0301", "\u00a0Renée\u00a0", "\u200bJosé\u200b", "\ufeffZoë",
    "\tAna María\t", "\u3000Yuki\u3000", " \u00a0Björn ", "Ana\u00a0María", "Ana\u200bMaría",
    "x\x1f", "\x1fx", "x\x1cy", "-x", "--help", "1234", "!!", "", "   ", "\u00a0",
    "a" * 64, "ABCDEF0123456789" * 4,
]

# (the row's country, phone)
HOSTILE_PHONES = [
    ("US", "+14155550101"), ("US", "+1 415 555 0101"), ("US", "+1-415-555-0101"), ("US", "+1.415.555.0101"),
    ("US", "+1 (415) 555-0101"), ("US", "(415) 555-0101"), ("US", "14155550101"), ("US", "1 415 555 0101"),
    ("US", "415.555.0101 ext. 12"), ("US", "+1 415 555 0101 x12"), ("US", "\u00a0+14155550101\u00a0"),
    ("US", "\u200b+14155550101\ufeff"), ("US", "\t+14155550101\n"), ("US", "+1\u00a0415\u00a0555\u00a00101"),
    ("US", "+１４１５５５５０１０１"), ("US", "+١٤١٥٥٥٥٠١٠١"), ("US", "555-0101"), ("US", "+1415555010"),
    ("US", "+141555501011"), ("US", "n/a"), ("US", "+"), ("US", "-"), ("US", ""), ("US", "0"),
    (None, "+14155550101"), (None, "4155550101"), ("XX", "+14155550101"), (" us ", "4155550101"),
    ("GB", "+44 20 7946 0958"), ("GB", "+442079460958"), ("GB", "+44 (0)20 7946 0958"), ("GB", "+4402079460958"),
    ("GB", "+44 020 7946 0958"), ("GB", "020 7946 0958"), ("GB", "0044 20 7946 0958"), ("GB", "07700 900123"),
    ("GB", "+447700900123"),
    # a number of another country in a row of a country with a trunk prefix of its own
    ("US", "+44 1632 960000"), ("US", "+441632960000"), ("US", "+442079460958"), ("DE", "+14155550101"),
    ("FR", "+442079460958"), ("GB", "+33612345678"), ("US", "+33612345678"), ("US", "+4930123456"),
    ("DE", "+49 30 123456"), ("DE", "030 123456"), ("DE", "+49 30 12345678"), ("FR", "+33 6 12 34 56 78"),
    ("FR", "06 12 34 56 78"), ("JP", "+81 3-1234-5678"), ("IN", "+91 98765 43210"), ("BR", "+55 11 91234-5678"),
    ("AU", "+61 412 345 678"), ("ES", "+34 612 34 56 78"), ("CA", "+1 604 555 0101"),
    # short and long numbering plans: possible for libphonenumber, not 10 to 15 digits
    ("AD", "+376 312345"), ("US", "+376312345"), ("NU", "+683 4002"), ("SH", "+290 22001"), ("IS", "+354 611 1234"),
    ("DE", "+49 30 1234567890123"),
    ("US", "a" * 64), ("US", "ABCDEF0123456789" * 4),
]

# --------------------------------------------------------------------------------------------
# Comparison.

FAILURES = ("disagree", "activator_only")
COLUMNS = ["agree", "agree_refed", "documented", "official_only", "both_refuse", "no_reference",
           "activator_only", "disagree"]


class Tally:
    def __init__(self):
        self.counts = defaultdict(Counter)          # kind -> outcome -> n
        self.documented = defaultdict(Counter)      # kind -> deviation -> n
        self.examples = defaultdict(list)           # (kind, outcome) -> [text]

    def add(self, kind, outcome, example=None, deviation=None):
        self.counts[kind][outcome] += 1
        self.counts[kind]["values"] += 1
        if deviation:
            self.documented[kind][deviation] += 1
        if example is not None:
            self.examples[(kind, outcome)].append(example)


def show(x):
    return ascii(x)


def example(raw, country, act, off, note=""):
    a = (f"normalized={show(act['normalized'])} hash={act['hash']}" if "hash" in act
         else f"invalid ({act['invalid']})")
    o = f"normalized={show(off[0])} hash={off[1]}" if off else "refuses"
    c = f" country={show(country)}" if country is not None else ""
    return f"raw={show(raw)}{c}\n      activator: {a}\n      official:  {o}{note}"


DEVIATION_CLEANING = ("common cleaning: NFC, and Unicode white space, U+200B and U+FEFF trimmed "
                      "(spec, 'Common cleaning')")
DEVIATION_PRE_HASHED = "64 hex characters passed through as a hash (spec, 'Already-hashed input')"
DEVIATION_TRUNK = ("trunk prefix 0 after the country code dropped, libphonenumber's rule (spec, "
                   "phone row)")


def compare_text(profile, kind, raw, act, tally):
    """E-mails and names: the raw value through both."""
    official = OFFICIAL[profile]
    ok = "hash" in act
    cleaned = spec_clean(raw)
    # Documented: a value of 64 hex characters is taken as a SHA-256 already (spec, "Already-
    # hashed input"); the official libraries hash it (or refuse it as an e-mail).
    if ok and HEX64.fullmatch(cleaned) and act["normalized"] == cleaned.lower():
        if act["hash"] == pre_hashed_hash(profile, cleaned):
            tally.add(kind, "documented", deviation=DEVIATION_PRE_HASHED)
        else:
            tally.add(kind, "disagree", example(raw, None, act, None, "  (pre-hashed, hash not passed through)"))
        return
    off = official(kind, raw)
    if ok and off and off[1] == act["hash"]:
        tally.add(kind, "agree")
        return
    if ok:
        # Documented: the spec's common cleaning (NFC; trimming all Unicode white space, U+200B
        # and U+FEFF) comes before every rule, where UID2's SDK trims only spaces and does no NFC
        # and Google's Formatter trims with str.strip and does no NFC (spec, "Common cleaning";
        # rules.rs `email` notes UID2's). It accounts for a difference only when the official
        # normalizer, given the cleaned value, agrees exactly.
        if cleaned != raw:
            off_clean = official(kind, cleaned)
            if off_clean and off_clean[1] == act["hash"]:
                tally.add(kind, "documented", deviation=DEVIATION_CLEANING)
                return
        tally.add(kind, "disagree" if off else "activator_only", example(raw, None, act, off))
        return
    if off:
        # The spec is stricter here (e.g. an e-mail's domain must hold a `.`, no white space
        # inside): allowed, counted, shown.
        tally.add(kind, "official_only", example(raw, None, act, off))
    else:
        tally.add(kind, "both_refuse")


def compare_phone(profile, raw, country, act, tally):
    official = OFFICIAL[profile]
    kind = "phone"
    ok = "hash" in act
    cleaned = spec_clean(raw)
    if ok and HEX64.fullmatch(cleaned) and act["normalized"] == cleaned.lower():
        if act["hash"] == pre_hashed_hash(profile, cleaned):
            tally.add(kind, "documented", deviation=DEVIATION_PRE_HASHED)
        else:
            tally.add(kind, "disagree", example(raw, country, act, None, "  (pre-hashed, hash not passed through)"))
        return
    # Every phone activator accepts: its E.164 output, given to the official normalizer, must be
    # accepted and hash the same (what a platform would make of the number activator sends).
    if ok:
        refed = official(kind, act["normalized"])
        if refed is None:
            tally.add(kind, "activator_only", example(raw, country, act, None, "  (refuses activator's E.164)"))
            return
        if refed[1] != act["hash"]:
            tally.add(kind, "disagree", example(raw, country, act, refed, "  (activator's E.164 re-fed)"))
            return
    if not raw_comparable_phone(profile, cleaned):
        # Not E.164: the official library would not normalize it (UID2 refuses it, Google keeps
        # its digits whatever the country), so the re-fed check above is the comparison.
        tally.add(kind, "agree_refed" if ok else "no_reference")
        return
    off = official(kind, raw)
    if ok and off and off[1] == act["hash"]:
        tally.add(kind, "agree")
        return
    if ok:
        # Documented: the common cleaning (see compare_text).
        off_clean = official(kind, cleaned) if cleaned != raw else None
        if off_clean and off_clean[1] == act["hash"]:
            tally.add(kind, "documented", deviation=DEVIATION_CLEANING)
            return
        # Documented: the spec parses phones with libphonenumber's rules, which drop a trunk
        # prefix `0` written after the country code (`+44 020 …` is `+44 20 …`); the official
        # libraries keep every digit.
        target = off or off_clean
        if target and trunk_prefix_dropped(target[0], act["normalized"]):
            tally.add(kind, "documented", deviation=DEVIATION_TRUNK)
            return
        tally.add(kind, "disagree" if target else "activator_only", example(raw, country, act, target))
        return
    if off:
        tally.add(kind, "official_only", example(raw, country, act, off))
    else:
        tally.add(kind, "both_refuse")


def run_profile(binary, profile, sample, tally):
    emails, phones, first, last = sample
    for kind in KINDS[profile]:
        if kind == "phone":
            by_country = defaultdict(list)
            for country, phone in phones:
                by_country[country].append(phone)
            for country in sorted(by_country, key=lambda c: (c is None, c or "")):
                values = by_country[country]
                for raw, act in zip(values, activator_hash(binary, profile, kind, country, values)):
                    compare_phone(profile, raw, country, act, tally)
        else:
            values = {"email": emails, "first_name": first, "last_name": last}[kind]
            for raw, act in zip(values, activator_hash(binary, profile, kind, None, values)):
                compare_text(profile, kind, raw, act, tally)


def build_sample(data):
    emails, phones, first, last = load_data(data)
    generated = {"email": len(emails), "phone": len(phones), "first_name": len(first), "last_name": len(last)}

    def expand(values, variants, hostile):
        out = dict.fromkeys(values)
        for v in values:
            for f in variants:
                out[f(v)] = None
        for v in hostile:
            out[v] = None
        return list(out)

    emails = expand(emails, EMAIL_VARIANTS, HOSTILE_EMAILS)
    names = sorted(set(first) | set(last))
    first = expand(names, TEXT_VARIANTS, HOSTILE_NAMES)
    last = first
    out_phones = dict.fromkeys(phones)
    for country, phone in phones:
        for v in phone_variants(phone):
            out_phones[(country, v)] = None
    for p in HOSTILE_PHONES:
        out_phones[p] = None
    return (emails, list(out_phones), first, last), generated


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("activator")
    ap.add_argument("data")
    ap.add_argument("--profile", choices=sorted(KINDS), action="append")
    ap.add_argument("--examples", type=int, default=10, help="failing examples shown per kind")
    a = ap.parse_args()
    profiles = a.profile or sorted(KINDS)
    sample, generated = build_sample(a.data)
    print(f"generated data {a.data}: distinct values " + ", ".join(f"{k} {n}" for k, n in generated.items()))
    failed = False
    for profile in profiles:
        tally = Tally()
        run_profile(a.activator, profile, sample, tally)
        print(f"\nprofile {profile}: " + {"google": "google-ads-datamanager-util Formatter",
                                          "uid2": "uid2-client"}[profile])
        print(f"  {'kind':<11}{'values':>8}" + "".join(f"{c:>15}" for c in COLUMNS))
        for kind in KINDS[profile]:
            c = tally.counts[kind]
            print(f"  {kind:<11}{c['values']:>8}" + "".join(f"{c[col]:>15}" for col in COLUMNS))
        print("  agree: both accept, same hash; agree_refed: not E.164, activator's E.164 re-fed agrees;"
              " no_reference: not E.164 and refused by activator")
        for kind in KINDS[profile]:
            for deviation, n in sorted(tally.documented[kind].items()):
                print(f"  {kind}: documented deviation, {n} values: {deviation}")
        for kind in KINDS[profile]:
            c = tally.counts[kind]
            # A comparison of nothing passes nothing.
            if c["agree"] + c["agree_refed"] < 100:
                print(f"  FAIL {kind}: only {c['agree'] + c['agree_refed']} values agree: is the sample there?")
                failed = True
            for outcome in FAILURES:
                if c[outcome]:
                    failed = True
                    print(f"  FAIL {kind}: {outcome}: {c[outcome]} values, for example:")
                    for e in tally.examples[(kind, outcome)][:a.examples]:
                        print(f"    {e}")
            if c["official_only"]:
                print(f"  info {kind}: official_only (accepted by the official normalizer only): "
                      f"{c['official_only']} values, for example:")
                for e in tally.examples[(kind, "official_only")][:3]:
                    print(f"    {e}")
    print("\nFAILED" if failed else "\nok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The Trade Desk's and UID2's official Python clients against activator's emulators, as a black box.

    ttd_client.py SANDBOX_URL

SANDBOX_URL is a running sandbox (`http://127.0.0.1:PORT`) whose UID2 operator has the sandbox's
documented client secret (activator::sandbox::ttd::DEFAULT_CLIENT_SECRET, given here as
CLIENT_SECRET). With `uid2-client` 2.9.0 (IABTechLab's SDK) and `ttd-data` 0.3.2 (The Trade Desk's
SDK, on uid2-client), both on PyPI, this script:

  1. maps e-mails and phones with `IdentityMapV3Client` (POST /v3/identity/map, the request
     sealed in the SDK's AES-256-GCM envelope, sent as bytes, the answer opened with the
     request's nonce): every identifier maps but the documented opt-outs `optout@example.com`
     and `+00000000000`, whose reason is OPTOUT; the refresh time is ahead; an e-mail given raw
     and as its hash map to the same UID2, and so does the same input asked again;
  2. expects the SDK's HTTPError 400 when the client secret is another (the operator cannot open
     the envelope) and 401 when the API key starts with `revoked`;
  3. sends the e-mails and phones to a segment with ttd-data's `DataClient` (its UID2 wrapper
     maps them through the same operator, then POST /data/advertiser with `TTD-Auth`, the
     ingest server given per call as the SDK's docs say): the opted-out ones come back as
     FailedLines with ErrorCode Uid2Error at their item numbers (the SDK sends `*` for them and
     merges its own reason), the others are in; then removes one with TtlInMinutes 0.

(Named for the platform, not `uid2_client.py`: a script of that name would be imported in place
of the SDK, its folder being first on `sys.path`.)

It prints one JSON object, {"advertiser_id", "segment", "uid2", "expected"} (`uid2`: each raw
e-mail or phone and its UID2; `expected`: the UID2s the segment must hold), and exits 0; on any
failure it prints what failed to stderr and exits 1.

tests/ttd.rs runs it as `the_official_client_works_against_the_emulator` with the tests' virtual
environment (`common::python()`; `uid2-client` and `ttd-data` pinned in tests/requirements.txt)
and checks the segment's members (GET /_sandbox/audiences/{id}/members) against `expected`, and
each UID2 against the one the emulator derives from the identifier's hash.
"""
import datetime as dt
import json
import sys
from urllib.error import HTTPError

CLIENT_SECRET = "YWN0aXZhdG9yLXNhbmRib3gtY2xpZW50LXNlY3JldCE="
OTHER_SECRET = "YW5vdGhlci1jbGllbnQtc2VjcmV0LTMyLWJ5dGVzISE="
API_KEY = "official-client-uid2-key"
TTD_AUTH = "official-client-ttd-token"
ADVERTISER = "official1"
SEGMENT = "official client segment"
EMAILS = ["user@example.com", "User.Name+News@GMail.com", "optout@example.com"]
PHONES = ["+12345678901", "+441234567890", "+00000000000"]
OPTED_OUT = {"optout@example.com", "+00000000000"}


def expect(condition, what):
    if not condition:
        raise AssertionError(what)


def map_identifiers(url):
    """Step 1: the identity map, raw and hashed, twice; each identifier's UID2."""
    from uid2_client import IdentityMapV3Client, IdentityMapV3Input, normalize_and_hash_email
    from uid2_client.unmapped_identity_reason import UnmappedIdentityReason

    client = IdentityMapV3Client(url, API_KEY, CLIENT_SECRET)
    answer = client.generate_identity_map(IdentityMapV3Input.from_emails(EMAILS).with_phones(PHONES))
    mapped, unmapped = answer.mapped_identities, answer.unmapped_identities
    now = dt.datetime.now(tz=dt.timezone.utc)
    uid2 = {}
    for dii in EMAILS + PHONES:
        if dii in OPTED_OUT:
            expect(dii in unmapped and dii not in mapped, f"{dii} is opted out")
            expect(unmapped[dii].reason == UnmappedIdentityReason.OPTOUT, f"{dii}: reason OPTOUT")
            continue
        expect(dii in mapped, f"{dii} maps")
        identity = mapped[dii]
        expect(identity.previous_raw_uid is None, f"{dii}: no previous UID2 before a rotation")
        expect(identity.refresh_from > now, f"{dii}: the refresh time is ahead")
        uid2[dii] = identity.current_raw_uid

    again = client.generate_identity_map(IdentityMapV3Input.from_emails(EMAILS).with_phones(PHONES))
    expect(
        {d: m.current_raw_uid for d, m in again.mapped_identities.items()} == uid2,
        "the same identifiers map to the same UID2s",
    )
    hashed = normalize_and_hash_email(EMAILS[1])
    by_hash = client.generate_identity_map(IdentityMapV3Input.from_hashed_emails([hashed]))
    expect(
        by_hash.mapped_identities[hashed].current_raw_uid == uid2[EMAILS[1]],
        "an e-mail and its hash map to one UID2",
    )
    return uid2


def expect_refused(url, api_key, secret, status):
    """Step 2: a refusal the SDK raises as urllib's HTTPError."""
    from uid2_client import IdentityMapV3Client, IdentityMapV3Input

    client = IdentityMapV3Client(url, api_key, secret)
    try:
        client.generate_identity_map(IdentityMapV3Input.from_emails(EMAILS[:1]))
    except HTTPError as e:
        expect(e.code == status, f"HTTP {status} expected, got {e.code}")
        return
    raise AssertionError(f"HTTP {status} expected, the map succeeded")


def send_to_segment(url, uid2):
    """Step 3: ttd-data's client maps and sends; the UID2s the segment must hold."""
    from ttd_data import DataClient
    from ttd_data.models import AdvertiserData
    from ttd_data.models.advertiserdataresponseerrorcode import AdvertiserDataResponseErrorCode
    from ttd_data.uid2 import AdvertiserDataItem, IdentityScope, UID2Config

    client = DataClient(
        ttd_auth=TTD_AUTH,
        uid2_config=UID2Config(
            base_url=url,
            api_key=API_KEY,
            client_secret=CLIENT_SECRET,
            identity_scope=IdentityScope.UID2,
        ),
    )
    ttl = AdvertiserData(name=SEGMENT, ttl_in_minutes=30 * 1440)
    items = [AdvertiserDataItem(email=e, data=[ttl]) for e in EMAILS]
    items += [AdvertiserDataItem(phone=p, data=[ttl]) for p in PHONES]
    answer = client.advertiser.ingest_advertiser_data(
        advertiser_id=ADVERTISER, items=items, server_url=url
    )
    lines = answer.advertiser_data_server_response.failed_lines or []
    refused = {int(line.item_number) for line in lines}
    opted_out = {i + 1 for i, dii in enumerate(EMAILS + PHONES) if dii in OPTED_OUT}
    expect(refused == opted_out, f"FailedLines at the opted-out items {opted_out}: {refused}")
    expect(
        all(line.error_code == AdvertiserDataResponseErrorCode.UID2_ERROR for line in lines),
        "the opted-out items are Uid2Error",
    )
    expect(
        all(r.current_raw_uid == uid2[d] for d, r in answer.identity_resolutions.items() if d in uid2),
        "ttd-data's mapping is the identity map's",
    )

    gone = EMAILS[0]
    removal = AdvertiserData(name=SEGMENT, ttl_in_minutes=0)
    answer = client.advertiser.ingest_advertiser_data(
        advertiser_id=ADVERTISER,
        items=[AdvertiserDataItem(email=gone, data=[removal])],
        server_url=url,
    )
    expect(not (answer.advertiser_data_server_response.failed_lines or []), "the removal is taken")
    return sorted(u for d, u in uid2.items() if d != gone)


def run(url):
    uid2 = map_identifiers(url)
    expect_refused(url, API_KEY, OTHER_SECRET, 400)
    expect_refused(url, "revoked-" + API_KEY, CLIENT_SECRET, 401)
    expected = send_to_segment(url, uid2)
    print(json.dumps({"advertiser_id": ADVERTISER, "segment": SEGMENT, "uid2": uid2, "expected": expected}))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        run(sys.argv[1].rstrip("/"))
    except Exception as e:  # the test prints what failed
        print(f"ttd_client.py: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

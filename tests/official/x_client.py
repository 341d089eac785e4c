#!/usr/bin/env python3
"""X's official Python SDK against activator's X Ads API emulator, as a black box.

    x_client.py SANDBOX_URL

SANDBOX_URL is a running sandbox (`http://127.0.0.1:PORT`). With `twitter-ads` 11.0.0 (PyPI;
"Twitter supported and maintained", github xdevplatform/twitter-python-ads-sdk), which signs
every request with OAuth 1.0a HMAC-SHA1 through requests-oauthlib, this script:

  1. loads the ad account (`client.accounts(id)`: GET /11/accounts/{id});
  2. creates a custom audience (`CustomAudience.create`: POST .../custom_audiences?name=..., a
     signed query with spaces in it, then the SDK's own GET of the new audience);
  3. adds 120 users by hashed e-mail in one operation (`CustomAudience.users`), expecting
     (success_count, total_count) == (120, 120): the emulator counts users, not operations;
  4. sends three operations at once: an Update of 20 users with an e-mail and a device id each,
     another of 10 with an e-mail, and a Delete of 10 earlier ones, expecting (40, 40);
  5. finds the audience with `CustomAudience.all(account, q=...)` (a signed query again);
  6. asks for an audience that does not exist and expects the SDK's NotFound (404);
  7. signs with a wrong consumer secret and expects the SDK's NotAuthorized (401): the
     emulator's signature check refuses what X would.

So every request the emulator accepted carried a signature made by X's own signer, and one it
refused carried a wrong one. It prints one JSON object, {"account_id", "custom_audience_id",
"name", "expected"} (`expected`: the identifiers the audience must hold, by X's field), and exits
0; on any failure it prints what failed to stderr and exits 1.

The credentials are the sandbox's documented ones (`activator::sandbox::x::SANDBOX_*`), from the
environment (X_SANDBOX_CONSUMER_KEY, X_SANDBOX_CONSUMER_SECRET, X_SANDBOX_ACCESS_TOKEN,
X_SANDBOX_ACCESS_TOKEN_SECRET; tests/x.rs sets them from the constants), else the values
documented there.

How the SDK is pointed at the sandbox: every request's URL is `Request.__domain()` + path, the
domain being `Request._DEFAULT_DOMAIN` unless a request is made with a `domain` option, which
`CustomAudience` never passes (so `Client(..., options={'domain': ...})` is not read). The script
sets `twitter_ads.http.Request._DEFAULT_DOMAIN` to SANDBOX_URL before any request, and leaves the
client's `sandbox` option unset (it would switch to X's own sandbox host).

tests/x.rs runs it as `the_official_client_works_against_the_emulator`, with the tests' virtual
environment (`common::python()`), once `twitter-ads==11.0.0` is in tests/requirements.txt, and
then checks the emulated audience's members (GET /_sandbox/audiences/{id}/members) against
`expected`.
"""
import hashlib
import json
import os
import sys

ACCOUNT = "18ce54d4x5t"
NAME = "official client audience"
DOCUMENTED = {
    "X_SANDBOX_CONSUMER_KEY": "sandbox-consumer-key",
    "X_SANDBOX_CONSUMER_SECRET": "sandbox+consumer/secret=",
    "X_SANDBOX_ACCESS_TOKEN": "1234567890-SandboxAccessToken",
    "X_SANDBOX_ACCESS_TOKEN_SECRET": "sandbox/token+secret=",
}


def credential(name):
    return os.environ.get(name) or DOCUMENTED[name]


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def expect(condition, what):
    if not condition:
        raise AssertionError(what)


def update(users):
    return {"operation_type": "Update", "params": {"users": users}}


def run(sandbox_url):
    from twitter_ads.audience import CustomAudience
    from twitter_ads.client import Client
    from twitter_ads.error import NotAuthorized, NotFound
    from twitter_ads.http import Request

    Request._DEFAULT_DOMAIN = sandbox_url.rstrip("/")
    keys = [credential(k) for k in DOCUMENTED]
    client = Client(*keys)
    expect(not client.sandbox, "the SDK's own sandbox host is not used")

    account = client.accounts(ACCOUNT)
    expect(account.id == ACCOUNT, f"the account loaded: {account.id!r}")

    audience = CustomAudience.create(account, NAME)
    expect(audience.id, f"a custom audience id: {audience.id!r}")
    expect(audience.name == NAME, f"the audience's name: {audience.name!r}")

    emails = [sha256(f"official{i}@example.com") for i in range(150)]
    devices = [sha256(f"6d92078a-8246-4ba4-ae5b-{i:012d}") for i in range(20)]

    counts = audience.users([update([{"email": [h]} for h in emails[:120]])])
    expect(counts == (120, 120), f"(success_count, total_count) of 120 users: {counts!r}")

    operations = [
        update([{"email": [e], "device_id": [d]} for e, d in zip(emails[120:140], devices)]),
        update([{"email": [h]} for h in emails[140:]]),
        {"operation_type": "Delete", "params": {"users": [{"email": [h]} for h in emails[:10]]}},
    ]
    counts = audience.users(operations)
    expect(counts == (40, 40), f"(success_count, total_count) of 40 users: {counts!r}")

    found = [a.id for a in CustomAudience.all(account, q="official client")]
    expect(audience.id in found, f"the audience is listed by q: {found!r}")

    try:
        CustomAudience.load(account, "nosuchaudience1")
        raise AssertionError("an audience that does not exist was read")
    except NotFound as e:
        expect(e.code == 404, f"HTTP 404 for a missing audience: {e.code}")

    forged = Client(keys[0], "not-the-consumer-secret", keys[2], keys[3])
    try:
        forged.accounts(ACCOUNT)
        raise AssertionError("a request signed with a wrong consumer secret was accepted")
    except NotAuthorized as e:
        expect(e.code == 401, f"HTTP 401 for a wrong signature: {e.code}")
        codes = [d.get("code") for d in (e.details or [])]
        expect("UNAUTHORIZED_ACCESS" in codes, f"X's error code: {codes!r}")

    return {
        "account_id": ACCOUNT,
        "custom_audience_id": audience.id,
        "name": NAME,
        "expected": {"email": sorted(emails[10:]), "device_id": sorted(devices)},
    }


def main():
    if len(sys.argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        result = run(sys.argv[1])
    except Exception as e:  # every failure, the SDK's or ours, is a failed conformance check
        print(f"the official X client failed against the emulator: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Pinterest's official Python SDK against activator's Pinterest emulator, as a black box.

    pinterest_client.py SANDBOX_URL

SANDBOX_URL is a running sandbox (`http://127.0.0.1:PORT`). With `pinterest-api-sdk` 0.2.7
(PyPI; Pinterest's own, on their generated client `pinterest-generated-client`) this script:

  1. creates a customer list of 120 SHA-256 e-mail hashes (`CustomerList.create`,
     POST /v5/ad_accounts/{id}/customer_lists), which reads it back (GET .../{list});
  2. adds 30 more and removes 10 (`add_record`, `remove_record`: PATCH with operation_type ADD
     and REMOVE, each followed by the SDK's own GET), and checks the counters Pinterest keeps:
     3 batches, 150 records uploaded, 10 removed;
  3. lists the account's customer lists (`CustomerList.get_all`, page_size 250) and finds it;
  4. makes it targetable (`Audience.create` with audience_type CUSTOMER_LIST and the list's id in
     its rule) and finds that audience in `Audience.get_all`;
  5. asks for a list that does not exist and expects the SDK's ApiException with status 404.

It prints one JSON object, {"ad_account_id", "customer_list_id", "audience_id", "expected"}
(`expected`: the hashes the list must hold), and exits 0; on any failure it prints what failed
to stderr and exits 1.

The SDK is configured as its documentation says, by environment: PINTEREST_API_URI (the base
URL, read when `pinterest.config` is imported: SANDBOX_URL + "/v5") and PINTEREST_ACCESS_TOKEN.
On import it also walks the parent of the working folder for a `config.json` and reads a `.env`:
the script first moves into a folder of its own inside a fresh temporary folder, so nothing of
the caller's tree is read.

tests/pinterest.rs runs it as `the_official_client_works_against_the_emulator`, with the
tests' virtual environment (`common::python()`), once `pinterest-api-sdk==0.2.7` is in
tests/requirements.txt:

    Command::new(common::python())
        .arg(common::repo().join("tests/official/pinterest_client.py"))
        .arg(&fixture.sandbox.url)
        .output()

and then checks the emulated list's members (GET /_sandbox/audiences/{id}/members) against
`expected`.
"""
import hashlib
import json
import os
import sys
import tempfile

ACCOUNT = "549755885175"
TOKEN = "official-client-token"
LIST_NAME = "official client list"


def sha256(text):
    return hashlib.sha256(text.encode()).hexdigest()


def isolate_and_configure(sandbox_url):
    """Moves into a fresh folder and configures the SDK, before anything of it is imported."""
    base = tempfile.mkdtemp(prefix="pinterest-sdk-")
    work = os.path.join(base, "work")
    os.mkdir(work)
    os.chdir(work)
    os.environ["PINTEREST_API_URI"] = sandbox_url.rstrip("/") + "/v5"
    os.environ["PINTEREST_ACCESS_TOKEN"] = TOKEN
    os.environ.pop("PINTEREST_JSON_ENV_VARIABLES", None)


def expect(condition, what):
    if not condition:
        raise AssertionError(what)


def run(sandbox_url):
    isolate_and_configure(sandbox_url)
    from openapi_generated.pinterest_client.exceptions import ApiException
    from pinterest.ads.audiences import Audience
    from pinterest.ads.customer_lists import CustomerList
    from pinterest.client import PinterestSDKClient

    client = PinterestSDKClient.create_client_with_token(TOKEN)
    hashes = [sha256(f"official{i}@example.com") for i in range(150)]

    customer_list = CustomerList.create(
        ad_account_id=ACCOUNT,
        name=LIST_NAME,
        records=",".join(hashes[:120]),
        list_type="EMAIL",
        client=client,
    )
    expect(customer_list.id and customer_list.id.isdigit(), f"a list id of digits: {customer_list.id!r}")
    expect(customer_list.type == "customerlist", f"type customerlist: {customer_list.type!r}")
    expect(customer_list.status in ("PROCESSING", "READY", "TOO_SMALL", "UPLOADING"),
           f"a documented status: {customer_list.status!r}")

    expect(customer_list.add_record(",".join(hashes[120:])) is True, "add_record answered True")
    expect(customer_list.remove_record(",".join(hashes[:10])) is True, "remove_record answered True")
    expect(customer_list.num_batches == 3, f"3 batches: {customer_list.num_batches!r}")
    expect(customer_list.num_uploaded_user_records == 150,
           f"150 records uploaded: {customer_list.num_uploaded_user_records!r}")
    expect(customer_list.num_removed_user_records == 10,
           f"10 records removed: {customer_list.num_removed_user_records!r}")

    lists, _bookmark = CustomerList.get_all(ad_account_id=ACCOUNT, page_size=250, client=client)
    expect(customer_list.id in [l.id for l in lists], "get_all lists the new list")

    audience = Audience.create(
        ad_account_id=ACCOUNT,
        name=LIST_NAME,
        rule={"customer_list_id": customer_list.id},
        audience_type="CUSTOMER_LIST",
        client=client,
    )
    expect(audience.audience_type == "CUSTOMER_LIST", f"a CUSTOMER_LIST audience: {audience.audience_type!r}")
    audiences, _bookmark = Audience.get_all(ad_account_id=ACCOUNT, page_size=100, client=client)
    expect(audience.id in [a.id for a in audiences], "get_all lists the new audience")

    try:
        CustomerList(ad_account_id=ACCOUNT, customer_list_id="999999999", client=client)
        raise AssertionError("a list that does not exist was read")
    except ApiException as e:
        expect(e.status == 404, f"HTTP 404 for a missing list: {e.status}")
        body = json.loads(e.body)
        expect(isinstance(body.get("code"), int) and isinstance(body.get("message"), str),
               f"an Error body {{code, message}}: {body!r}")

    return {
        "ad_account_id": ACCOUNT,
        "customer_list_id": customer_list.id,
        "audience_id": audience.id,
        "expected": sorted(hashes[10:]),
    }


def main():
    if len(sys.argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    try:
        result = run(sys.argv[1])
    except Exception as e:  # every failure, the SDK's or ours, is a failed conformance check
        print(f"the official Pinterest client failed against the emulator: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

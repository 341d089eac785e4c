"""LinkedIn's official Python client (linkedin-api-client 0.3.0, pinned in
tests/requirements.txt) against the sandbox's LinkedIn emulator, as a black box: it creates a
user DMP segment (CREATE, the id from `x-restli-id`), finds it with the account finder, adds and
removes users with BATCH_CREATE (its 404 "not ready" first, then a status per element,
index-aligned, a refused element among them), and checks the members the sandbox reports.

The client speaks to https://api.linkedin.com/rest: it reads the base URL from
`linkedin_api.common.constants.VERSIONED_BASE_URL` each time it builds a URL
(`utils/api.py build_rest_url`), so setting that constant points it at the sandbox.

Usage: linkedin_client.py SANDBOX_URL. Exits non-zero with a message on the first failure.
"""

import hashlib
import json
import sys
import time
import urllib.request

import linkedin_api.common.constants as constants
from linkedin_api.clients.restli.client import RestliClient
from linkedin_api.common.errors import ResponseFormattingError

TOKEN = "AQV-official-client-token"
VERSION = "202604"
ACCOUNT = "urn:li:sponsoredAccount:508000001"
GAID = "6d92078a-8246-4ba4-ae5b-76104861e7dc"


def fail(message):
    print(f"FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def sha256(email):
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class Recorder:
    """Keeps the last raw answer: the client raises ResponseFormattingError on an error answer
    of a BATCH_CREATE (it has no `elements`), and the status is then read from here."""

    def __init__(self, client):
        self.last = None
        send = client.session.send

        def recording(request, **kwargs):
            self.last = send(request, **kwargs)
            return self.last

        client.session.send = recording


def members(base, segment_id):
    with urllib.request.urlopen(f"{base}/_sandbox/audiences/{segment_id}/members") as r:
        return sorted(json.dumps(m, sort_keys=True) for m in json.load(r))


def element(action, id_type, value):
    return {"action": action, "userIds": [{"idType": id_type, "idValue": value}]}


def batch_create(client, recorder, segment_id, elements):
    """A BATCH_CREATE of users: the client's answer, or the raw one if it could not read it."""
    try:
        return client.batch_create(
            resource_path="/dmpSegments/{id}/users",
            path_keys={"id": segment_id},
            entities=elements,
            access_token=TOKEN,
            version_string=VERSION,
        )
    except ResponseFormattingError:
        return recorder.last


def main():
    if len(sys.argv) != 2:
        fail("usage: linkedin_client.py SANDBOX_URL")
    base = sys.argv[1].rstrip("/")
    constants.VERSIONED_BASE_URL = f"{base}/rest"
    client = RestliClient()
    recorder = Recorder(client)

    created = client.create(
        resource_path="/dmpSegments",
        entity={
            "name": "official client",
            "sourcePlatform": "ACTIVATOR_TEST",
            "account": ACCOUNT,
            "type": "USER",
            "accessPolicy": "PRIVATE",
            "destinations": [{"destination": "LINKEDIN"}],
        },
        access_token=TOKEN,
        version_string=VERSION,
    )
    check(created.status_code == 201, f"create: HTTP {created.status_code}")
    segment_id = created.entity_id
    check(segment_id and segment_id.isdigit(), f"create: x-restli-id is {segment_id!r}")
    sent_headers = recorder.last.request.headers
    check(
        sent_headers.get("X-RestLi-Protocol-Version") == "2.0.0"
        and sent_headers.get("LinkedIn-Version") == VERSION,
        f"the client sent {dict(sent_headers)}",
    )

    found = client.finder(
        resource_path="/dmpSegments",
        finder_name="account",
        query_params={"account": ACCOUNT, "start": 0, "count": 10},
        access_token=TOKEN,
        version_string=VERSION,
    )
    check(found.status_code == 200, f"finder: HTTP {found.status_code}")
    ids = [str(s["id"]) for s in found.elements]
    check(ids == [segment_id], f"finder: {ids}, expected [{segment_id}]")
    check(found.paging.total == 1, f"finder: paging total {found.paging.total}")

    email = sha256(" Someone@Example.com")
    adds = [
        element("ADD", "SHA256_EMAIL", email),
        element("ADD", "SHA256_EMAIL", "not-a-hash"),
        element("ADD", "GOOGLE_AID", GAID),
    ]
    # A new segment is not found for a moment, as on LinkedIn: retried until it is.
    for attempt in range(5):
        answer = batch_create(client, recorder, segment_id, adds)
        if answer.status_code != 404:
            break
        check(attempt == 0, "the segment stayed 'not found'")
        time.sleep(0.2)
    check(answer.status_code == 200, f"add: HTTP {answer.status_code}")
    statuses = [e.status for e in answer.elements]
    check(statuses == [201, 400, 201], f"add: element statuses {statuses}")
    check(answer.elements[1].error is not None, "add: the refused element has no error")
    expected = sorted(
        json.dumps(m, sort_keys=True)
        for m in [{"SHA256_EMAIL": email}, {"GOOGLE_AID": GAID}]
    )
    check(members(base, segment_id) == expected, f"members after add: {members(base, segment_id)}")

    removed = batch_create(
        client, recorder, segment_id, [element("REMOVE", "SHA256_EMAIL", email)]
    )
    check(removed.status_code == 200, f"remove: HTTP {removed.status_code}")
    check([e.status for e in removed.elements] == [201], "remove: element status")
    expected = [json.dumps({"GOOGLE_AID": GAID}, sort_keys=True)]
    check(members(base, segment_id) == expected, f"members after remove: {members(base, segment_id)}")

    too_many = batch_create(
        client, recorder, segment_id, [element("ADD", "SHA256_EMAIL", email)] * 5001
    )
    check(too_many.status_code == 400, f"5,001 elements: HTTP {too_many.status_code}")

    print(f"linkedin-api-client against the emulator: segment {segment_id} created, found, users added and removed")


if __name__ == "__main__":
    main()

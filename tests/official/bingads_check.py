#!/usr/bin/env python3
"""The sandbox's Microsoft Advertising emulator against Microsoft's own SDK, call by call.

    bingads_check.py SANDBOX_URL

SANDBOX_URL is a running sandbox (`activator sandbox`, or the tests' in-process one). Microsoft's
REST SDK for Python, `msads` 13.0.30.1 (the REST successor of `bingads`, from the same
repository, BingAds/BingAds-Python-SDK), is pointed at it with `ServiceClient(...,
location=SANDBOX_URL)` and makes the calls activator makes, with the request objects, JSON
encoding (longs as strings, enums by name) and headers (`Authorization: Bearer`,
`DeveloperToken`, `CustomerId`, `CustomerAccountId`) of Microsoft's code, not ours:

  AddAudiences          a customer list is created; a second of the same name is refused
                        with 4853 DuplicateAudienceName at its index (that answer read
                        without the SDK: msads cannot read the documented null id)
  GetAudiencesByIds     every customer list of the customer (AudienceIds null) holds it;
                        an unknown id is null with 4835 InvalidAudienceId
  ApplyCustomerListUserData
                        Add, Remove and Replace change the list's members (read back from
                        /_sandbox/audiences/{id}/members) as Microsoft documents; a plain
                        e-mail is refused as 8004 EmailMustBeHashed at its Index and the
                        others applied; 1,001 items are refused (6999); the customer
                        without accepted terms is refused with 8003 unless the call sets
                        AcceptCustomerMatchTerm; a throttled call is 117 CallRateExceeded
  credentials           the expired access token is 109 (HTTP 401), the refused developer
                        token 105 (HTTP 401), a missing header 116

Faults must be `ApplicationFault`s the SDK reads: each refused call raises the SDK's
`ApiException` with the documented status and a body whose error `Code` is checked.

Why not the SOAP `bingads` package (13.0.30.1, suds), which shared/spec/platforms-more.md names:
it builds SOAP envelopes and posts them to
`/Api/Advertiser/CampaignManagement/v13/CampaignManagementService.svc`, which the emulator does
not serve: it serves the REST form, which activator calls (Microsoft moves every client to REST;
SOAP is to be retired on January 31, 2027). And `bingads` and `msads` both install the top-level
module `bingads`, so they cannot share an environment.

The exit status is 1 on any failure, each named.
"""
import hashlib
import json
import sys
import urllib.request
import uuid

from bingads.authorization import AuthorizationData, OAuthDesktopMobileAuthCodeGrant, OAuthTokens
from bingads.service_client import ServiceClient
from openapi_client.exceptions import ApiException
from openapi_client.models.campaign import (
    AddAudiencesRequest,
    ApplyCustomerListUserDataRequest,
    AudienceType,
    CustomerList,
    CustomerListActionType,
    CustomerListItemSubType,
    CustomerListUserData,
    EntityScope,
    GetAudiencesByIdsRequest,
)

# The sandbox's documented test values (src/sandbox/microsoft.rs).
EXPIRED_ACCESS_TOKEN = "sandbox-expired-access-token"
INVALID_DEVELOPER_TOKEN = "sandbox-invalid-developer-token"
CUSTOMER_WITHOUT_TERMS = "8003"

CUSTOMER = "1234567"
ACCOUNT = "7654321"
ACCESS_TOKEN = "sdk-check-access-token"
DEVELOPER_TOKEN = "sdk-check-developer-token"
# Microsoft's documented hash of test@contoso.com (bulk-service/customer-list-item.md).
CONTOSO = "f25ad364d33972379a7a4f4df33db142205f5c40eb19cfdb2fc5aaf117e10101"

FAILURES = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        FAILURES.append(what)


def sha(value):
    return hashlib.sha256(value.encode()).hexdigest()


def client(url, customer=CUSTOMER, access_token=ACCESS_TOKEN, developer_token=DEVELOPER_TOKEN):
    auth = OAuthDesktopMobileAuthCodeGrant(
        client_id="activator-sdk-check", oauth_tokens=OAuthTokens(access_token=access_token)
    )
    data = AuthorizationData(
        account_id=ACCOUNT, customer_id=customer, developer_token=developer_token, authentication=auth
    )
    return ServiceClient("CampaignManagementService", 13, data, location=url)


def sandbox(url, method, path, body=None):
    request = urllib.request.Request(
        url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def post(url, operation, body):
    """A call made without the SDK, with the headers it sends."""
    headers = {
        "Authorization": f"Bearer {ACCESS_TOKEN}",
        "DeveloperToken": DEVELOPER_TOKEN,
        "CustomerId": CUSTOMER,
        "CustomerAccountId": ACCOUNT,
        "content-type": "application/json",
    }
    request = urllib.request.Request(
        f"{url}/CampaignManagement/v13/{operation}",
        method="POST",
        data=json.dumps(body).encode(),
        headers=headers,
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def members(url, list_id):
    return {m["Email"] for m in sandbox(url, "GET", f"/_sandbox/audiences/{list_id}/members")}


def create_list(service, name, customer=CUSTOMER):
    audience = CustomerList(
        name=name, scope=EntityScope.CUSTOMER, parent_id=customer, membership_duration=-1
    )
    return service.add_audiences(add_audiences_request=AddAudiencesRequest(audiences=[audience]))


def apply(service, list_id, action, items, accept=None):
    data = CustomerListUserData(
        action_type=action,
        audience_id=list_id,
        customer_list_item_sub_type=CustomerListItemSubType.EMAIL,
        customer_list_items=items,
    )
    if accept is not None:
        data.accept_customer_match_term = accept
    request = ApplyCustomerListUserDataRequest(customer_list_user_data=data)
    return service.apply_customer_list_user_data(apply_customer_list_user_data_request=request)


def fault(call):
    """The status and error codes of the `ApiException` a call raises, or None if it did not."""
    try:
        call()
    except ApiException as e:
        body = json.loads(e.body) if e.body else {}
        errors = body.get("Errors") or body.get("OperationErrors") or []
        headers = {k.lower(): v for k, v in (e.headers or {}).items()}
        return e.status, [err.get("Code") for err in errors], headers
    return None


def check_lists(url, service):
    name = f"sdk-check-{uuid.uuid4().hex[:8]}"
    created = create_list(service, name)
    list_id = created.audience_ids[0] if created.audience_ids else None
    check(list_id is not None and not created.partial_errors, "AddAudiences creates a customer list")
    # msads 13.0.30.1 types AudienceIds as a list of strings and cannot read the null that
    # addaudiences.md documents for an audience not added, so this call goes without it.
    again = post(url, "Audiences", {"Audiences": [{
        "Type": "CustomerList", "Name": name, "Scope": "Customer", "ParentId": CUSTOMER,
    }]})
    codes = [(e["Code"], e["Index"]) for e in again["PartialErrors"]]
    check(again["AudienceIds"] == [None] and codes == [(4853, 0)], "the same name again is 4853 at its index")

    query = GetAudiencesByIdsRequest(audience_ids=None, type=AudienceType.CUSTOMERLIST)
    every = service.get_audiences_by_ids(get_audiences_by_ids_request=query).audiences or []
    found = [a for a in every if a is not None and a.name == name]
    check(
        len(found) == 1 and found[0].id == list_id and isinstance(found[0], CustomerList),
        "GetAudiencesByIds without ids gives the customer's lists, as CustomerList objects",
    )
    query = GetAudiencesByIdsRequest(audience_ids=[list_id, "999999999"], type=AudienceType.CUSTOMERLIST)
    some = service.get_audiences_by_ids(get_audiences_by_ids_request=query)
    check(
        [a and a.id for a in some.audiences] == [list_id, None]
        and [(e.code, e.index) for e in some.partial_errors] == [(4835, 1)],
        "an unknown id is null with 4835 at its index",
    )
    return list_id


def check_membership(url, service, list_id):
    a, b = sha("a@example.com"), sha("b@example.com")
    answer = apply(service, list_id, CustomerListActionType.ADD, [a, b, CONTOSO, "test@contoso.com"])
    refused = [(e.code, e.index) for e in answer.partial_errors or []]
    check(refused == [(8004, 3)], f"a plain e-mail is refused with 8004 at its index: {refused}")
    check(members(url, list_id) == {a, b, CONTOSO}, "Add adds the hashed items")
    apply(service, list_id, CustomerListActionType.REMOVE, [b])
    check(members(url, list_id) == {a, CONTOSO}, "Remove removes them")
    apply(service, list_id, CustomerListActionType.REPLACE, [CONTOSO])
    check(members(url, list_id) == {CONTOSO}, "Replace makes the list the items")
    too_many = [sha(f"{i}@example.com") for i in range(1001)]
    got = fault(lambda: apply(service, list_id, CustomerListActionType.ADD, too_many))
    check(got is not None and got[:2] == (400, [6999]), f"1,001 items are refused with 6999: {got and got[:2]}")


def check_terms(url):
    service = client(url, customer=CUSTOMER_WITHOUT_TERMS)
    list_id = create_list(service, f"sdk-terms-{uuid.uuid4().hex[:8]}", CUSTOMER_WITHOUT_TERMS).audience_ids[0]
    got = fault(lambda: apply(service, list_id, CustomerListActionType.ADD, [CONTOSO]))
    check(got is not None and got[:2] == (400, [8003]), f"terms not accepted is 8003: {got and got[:2]}")
    got = fault(lambda: apply(service, list_id, CustomerListActionType.ADD, [CONTOSO], accept=False))
    check(got is not None and got[:2] == (400, [8003]), f"AcceptCustomerMatchTerm false is 8003: {got and got[:2]}")
    apply(service, list_id, CustomerListActionType.ADD, [CONTOSO], accept=True)
    check(members(url, list_id) == {CONTOSO}, "AcceptCustomerMatchTerm true accepts them")


def check_credentials(url, list_id):
    query = GetAudiencesByIdsRequest(audience_ids=None, type=AudienceType.CUSTOMERLIST)

    def get(service):
        return lambda: service.get_audiences_by_ids(get_audiences_by_ids_request=query)

    got = fault(get(client(url, access_token=EXPIRED_ACCESS_TOKEN)))
    check(got is not None and got[:2] == (401, [109]), f"an expired access token is 109: {got and got[:2]}")
    got = fault(get(client(url, developer_token=INVALID_DEVELOPER_TOKEN)))
    check(got is not None and got[:2] == (401, [105]), f"a refused developer token is 105: {got and got[:2]}")
    got = fault(get(client(url, developer_token="")))
    check(got is not None and got[:2] == (400, [116]), f"a missing developer token is 116: {got and got[:2]}")

    throttled = {"once": [{"fault": "throttle", "path_ends_with": "/CustomerListUserData/Apply"}]}
    sandbox(url, "POST", "/_sandbox/faults", throttled)
    service = client(url)
    got = fault(lambda: apply(service, list_id, CustomerListActionType.ADD, [CONTOSO]))
    check(
        got is not None and got[:2] == (400, [117]) and got[2].get("retry-after") == "1",
        f"a throttled call is 117 with the sandbox's window: {got and got[:2]}",
    )
    sandbox(url, "POST", "/_sandbox/faults", {})


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    url = sys.argv[1].rstrip("/")
    service = client(url)
    list_id = check_lists(url, service)
    check_membership(url, service, list_id)
    check_terms(url)
    check_credentials(url, list_id)
    listed = [a for a in sandbox(url, "GET", "/_sandbox/audiences") if a["platform"] == "microsoft"]
    check(any(a["id"] == list_id for a in listed), "GET /_sandbox/audiences shows the lists")
    print(f"{len(FAILURES)} failed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()

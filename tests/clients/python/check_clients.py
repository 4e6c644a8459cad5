"""Drive a running medvault with two unmodified public Python FHIR clients.

fhirclient (SMART on FHIR's client-py) and fhirpy, used the way their documentation shows:
create, read, update, search with paging by `link.next`, transaction Bundles made by
carebundle, If-Match on update (412 when stale), delete, and errors answered with an
OperationOutcome.

Environment:
  MEDVAULT_FHIR_BASE   e.g. http://127.0.0.1:8200/fhir (required)
  CAREBUNDLE_DIR       directory of transaction Bundles written by `carebundle generate`
                       (required; this script uses the first two, sorted by name)

Exits 0 when every check passed, 1 otherwise, printing what failed.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import traceback
import uuid

import requests

BASE = os.environ.get("MEDVAULT_FHIR_BASE", "").rstrip("/")
BUNDLES = os.environ.get("CAREBUNDLE_DIR", "")
# Names are unique per run, so searches see only what this run made.
TAG = uuid.uuid4().hex[:8]


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def load_bundle(index):
    files = sorted(glob.glob(os.path.join(BUNDLES, "*.json")))
    check(len(files) > index, f"need at least {index + 1} carebundle bundles in {BUNDLES}, found {len(files)}")
    with open(files[index], encoding="utf-8") as f:
        return json.load(f)


def expect_outcome(resp, status):
    """A requests.Response that is an error answered with a FHIR OperationOutcome."""
    check(resp.status_code == status, f"expected HTTP {status}, got {resp.status_code}: {resp.text[:300]}")
    ctype = resp.headers.get("Content-Type", "")
    check(ctype.startswith("application/fhir+json"), f"error Content-Type is {ctype!r}")
    body = resp.json()
    check(body.get("resourceType") == "OperationOutcome", f"error body is not an OperationOutcome: {body}")
    check(body.get("issue") and body["issue"][0].get("code"), f"OperationOutcome without issue code: {body}")
    return body


def bundle_summary(bundle):
    counts = {}
    for e in bundle["entry"]:
        t = e["resource"]["resourceType"]
        counts[t] = counts.get(t, 0) + 1
    patient = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    return counts, patient


# ------------------------------------------------------------------------------- fhirclient

def fhirclient_checks():
    from fhirclient import client as smart_client
    from fhirclient.models.bundle import Bundle
    from fhirclient.models.capabilitystatement import CapabilityStatement
    from fhirclient.models.observation import Observation
    from fhirclient.models.operationoutcome import OperationOutcome
    from fhirclient.models.patient import Patient
    from fhirclient.server import FHIRNotFoundException

    smart = smart_client.FHIRClient(settings={"app_id": "medvault-clients-it", "api_base": BASE})
    server = smart.server
    family = f"Smartpy{TAG}"

    def capability():
        # prepare() fetches /metadata and parses it strictly into the R4 model.
        smart.prepare()
        cap = server.capabilityStatement
        check(isinstance(cap, CapabilityStatement), "no CapabilityStatement")
        check(cap.fhirVersion == "4.0.1", f"fhirVersion {cap.fhirVersion}")
        check("application/fhir+json" in cap.format, f"format {cap.format}")
        types = {r.type for r in cap.rest[0].resource}
        check({"Patient", "Observation"} <= types, f"resources {types}")

    state = {}

    def create_read_update_delete():
        p = Patient({
            "name": [{"family": family, "given": ["Ana"]}],
            "gender": "female",
            "birthDate": "1980-02-29",
        })
        created = p.create(server)
        check(created and created.get("id"), f"create returned {created}")
        pid = created["id"]
        check(created["meta"]["versionId"] == "1", f"versionId {created.get('meta')}")

        read = Patient.read(pid, server)
        check(read.id == pid, "read id")
        check(read.name[0].family == family, "read family")
        check(read.birthDate.isostring == "1980-02-29", f"birthDate {read.birthDate.isostring}")
        check(read.meta.versionId == "1", "read versionId")

        read.gender = "other"
        updated = read.update()
        check(updated["meta"]["versionId"] == "2", f"update versionId {updated.get('meta')}")
        again = Patient.read(pid, server)
        check(again.gender == "other", "update not visible on read")
        state["pid"] = pid

    def if_match():
        # client-py has no If-Match parameter; its requests Session is public, so the
        # header goes on the session for this one call.
        pid = state["pid"]
        current = Patient.read(pid, server)
        current.active = True
        server.session.headers["If-Match"] = 'W/"1"'
        try:
            try:
                current.update()
                raise CheckFailed("stale If-Match was accepted")
            except requests.HTTPError as e:
                body = expect_outcome(e.response, 412)
                OperationOutcome(body)  # strict R4 parse
            server.session.headers["If-Match"] = 'W/"2"'
            ok = current.update()
            check(ok["meta"]["versionId"] == "3", f"If-Match update versionId {ok.get('meta')}")
        finally:
            server.session.headers.pop("If-Match", None)
        check(Patient.read(pid, server).active is True, "If-Match update not stored")

    def delete():
        pid = state["pid"]
        p = Patient.read(pid, server)
        p.delete()
        try:
            Patient.read(pid, server)
            raise CheckFailed("deleted patient still readable")
        except FHIRNotFoundException as e:
            expect_outcome(e.response, 404)
        except requests.HTTPError as e:
            expect_outcome(e.response, 410)

    def search_paging():
        made = set()
        for i in range(5):
            made.add(Patient({"name": [{"family": family + "page", "given": [f"P{i}"]}]}).create(server)["id"])
        search = Patient.where({"family": family + "page", "_count": "2"})
        pages = list(search.perform_iter(server))
        check(len(pages) == 3, f"expected 3 pages of 2, got {len(pages)}")
        check(all(b.type == "searchset" for b in pages), "not searchsets")
        check(pages[0].total == 5, f"total {pages[0].total}")
        ids = [r.id for r in search.perform_resources_iter(server)]
        check(sorted(ids) == sorted(made), f"paged ids {ids} != created {made}")

    def transaction():
        raw = load_bundle(0)
        counts, patient = bundle_summary(raw)
        bundle = Bundle(raw)  # carebundle's output parses strictly as R4
        resp = bundle.create(server)  # POSTs to the base: a transaction
        out = Bundle(resp)
        check(out.type == "transaction-response", f"type {out.type}")
        check(len(out.entry) == len(raw["entry"]), "entry count")
        for e in out.entry:
            check(e.response.status.startswith("201"), f"entry status {e.response.status}")
            check(e.response.location and e.response.etag, "entry location/etag")
        loc = out.entry[0].response.location
        check(loc.startswith("Patient/"), f"first location {loc}")
        pid = loc.split("/")[1]
        stored = Patient.read(pid, server)
        check(stored.name[0].family == patient["name"][0]["family"], "transaction patient family")
        ident = patient["identifier"][0]
        found = list(Patient.where({"identifier": f"{ident['system']}|{ident['value']}"}).perform_resources_iter(server))
        check([p.id for p in found] == [pid], f"identifier search found {[p.id for p in found]}")
        obs = list(Observation.where({"patient": pid, "_count": "10"}).perform_resources_iter(server))
        check(len(obs) == counts["Observation"], f"{len(obs)} observations, bundle had {counts['Observation']}")
        check(all(o.subject.reference == f"Patient/{pid}" for o in obs), "urn:uuid references not rewritten")

    def errors():
        try:
            Patient.read("does-not-exist", server)
            raise CheckFailed("missing patient was found")
        except FHIRNotFoundException as e:
            oo = OperationOutcome(expect_outcome(e.response, 404))
            check(oo.issue[0].code == "not-found", f"issue code {oo.issue[0].code}")
        try:
            Patient({"gender": "robot"}).create(server)
            raise CheckFailed("invalid gender accepted")
        except requests.HTTPError as e:
            oo = OperationOutcome(expect_outcome(e.response, 400))
            check(oo.issue[0].severity in ("error", "fatal"), "severity")
        try:
            server.request_json("Patient?not-a-parameter=1")
            raise CheckFailed("unknown search parameter accepted")
        except requests.HTTPError as e:
            expect_outcome(e.response, 400)

    return [
        ("fhirclient capability statement", capability),
        ("fhirclient create/read/update", create_read_update_delete),
        ("fhirclient If-Match update (412 when stale)", if_match),
        ("fhirclient delete", delete),
        ("fhirclient search and paging by link.next", search_paging),
        ("fhirclient carebundle transaction", transaction),
        ("fhirclient errors are OperationOutcomes", errors),
    ]


# ----------------------------------------------------------------------------------- fhirpy

def fhirpy_checks():
    from fhirpy import SyncFHIRClient
    from fhirpy.base.exceptions import MultipleResourcesFound, OperationOutcome, ResourceNotFound

    client = SyncFHIRClient(BASE)
    family = f"Fhirpy{TAG}"
    state = {}

    def create_read_update():
        p = client.resource(
            "Patient",
            name=[{"family": family, "given": ["Bo"]}],
            gender="male",
            birthDate="1975-06-01",
        )
        p.save()  # POST with Content-Type: application/json; the id is read from the body
        check(p.id, "no id after save")
        check(p["meta"]["versionId"] == "1", f"meta {p.get('meta')}")
        state["pid"] = p.id

        read = client.reference("Patient", p.id).to_resource()
        check(read["name"][0]["family"] == family, "read family")
        got = client.resources("Patient").search(_id=p.id).get()
        check(got.id == p.id, "search by _id")

        read["gender"] = "other"
        read.save()  # PUT
        check(read["meta"]["versionId"] == "2", f"update meta {read.get('meta')}")
        check(client.get("Patient", p.id)["gender"] == "other", "update not stored")
        # refresh() sends If-None-Match with the bare versionId; the server answers 200.
        p.refresh()
        check(p["gender"] == "other" and p["meta"]["versionId"] == "2", "refresh")

    def if_match():
        pid = state["pid"]
        current = client.get("Patient", pid)
        current["active"] = True
        # fhirpy has no If-Match argument; extra_headers on a client is its documented way
        # to send a header.
        stale = SyncFHIRClient(BASE, extra_headers={"If-Match": 'W/"1"'})
        try:
            stale.resource("Patient", **current).save()
            raise CheckFailed("stale If-Match was accepted")
        except MultipleResourcesFound as e:
            # fhirpy maps every 412 to MultipleResourcesFound (it has conditional operations in
            # mind); the message is the server's body.
            body = json.loads(str(e))
            check(body["resourceType"] == "OperationOutcome", f"412 body {body}")
        fresh = SyncFHIRClient(BASE, extra_headers={"If-Match": 'W/"2"'})
        saved = fresh.resource("Patient", **current)
        saved.save()
        check(saved["meta"]["versionId"] == "3", f"If-Match update meta {saved.get('meta')}")

    def delete():
        pid = state["pid"]
        client.reference("Patient", pid).delete()
        try:
            client.get("Patient", pid)
            raise CheckFailed("deleted patient still readable")
        except ResourceNotFound as e:
            body = json.loads(str(e))
            check(body["resourceType"] == "OperationOutcome", f"404/410 body {body}")

    def search_paging():
        made = set()
        for i in range(7):
            r = client.resource("Patient", name=[{"family": family + "page", "given": [f"Q{i}"]}])
            r.save()
            made.add(r.id)
        search = client.resources("Patient").search(family=family + "page").limit(3)
        check(len(search.fetch()) == 3, "first page size")
        raw = search.fetch_raw()
        check(raw["total"] == 7, f"total {raw.get('total')}")
        # fhirpy's count() adds Aidbox's _totalMethod, which this server refuses as an
        # unknown parameter; _count=0 gives the total without entries.
        check(search.limit(0).fetch_raw()["total"] == 7, "total with _count=0")
        nxt = [l["url"] for l in raw["link"] if l["relation"] == "next"]
        check(nxt and nxt[0].startswith(BASE + "/"), f"next link {nxt} does not start with {BASE}/")
        every = search.fetch_all()  # follows link.next, which must start with the base
        check(sorted(r.id for r in every) == sorted(made), "fetch_all ids")
        check(search.first() is not None, "first()")

    def transaction():
        raw = load_bundle(1)
        counts, patient = bundle_summary(raw)
        resp = client.execute("/", method="post", data=raw)  # POST [base]/
        check(resp["resourceType"] == "Bundle" and resp["type"] == "transaction-response", f"{resp.get('type')}")
        statuses = {e["response"]["status"] for e in resp["entry"]}
        check(all(s.startswith("201") for s in statuses), f"statuses {statuses}")
        ident = patient["identifier"][0]
        stored = client.resources("Patient").search(identifier=f"{ident['system']}|{ident['value']}").get()
        check(stored["name"][0]["family"] == patient["name"][0]["family"], "stored family")
        obs = client.resources("Observation").search(patient=stored.id).limit(8).fetch_all()
        check(len(obs) == counts["Observation"], f"{len(obs)} observations, bundle had {counts['Observation']}")
        conds = client.resources("Condition").search(patient=stored.id).fetch_all()
        check(len(conds) == counts.get("Condition", 0), f"{len(conds)} conditions")

    def errors():
        try:
            client.resource("Patient", gender="robot").save()
            raise CheckFailed("invalid gender accepted")
        except OperationOutcome as e:
            check(e.resource["resourceType"] == "OperationOutcome", "400 body")
            check(e.resource["issue"][0]["code"], "issue code")
        try:
            client.get("Patient", "does-not-exist")
            raise CheckFailed("missing patient was found")
        except ResourceNotFound as e:
            check(json.loads(str(e))["resourceType"] == "OperationOutcome", "404 body")
        try:
            client.resources("Patient").search(**{"not-a-parameter": "1"}).fetch()
            raise CheckFailed("unknown search parameter accepted")
        except OperationOutcome as e:
            check(e.resource["resourceType"] == "OperationOutcome", "400 body")
        # fhirpy's conditional create (criteria in the query string, not If-None-Exist) is
        # refused rather than turned into a plain create that duplicates the patient.
        ident = {"system": f"urn:medvault-it:{TAG}", "value": "dup"}
        client.resource("Patient", identifier=[ident]).save()
        try:
            client.resources("Patient").search(identifier=f"{ident['system']}|dup").get_or_create(
                client.resource("Patient", identifier=[ident])
            )
            raise CheckFailed("query-string conditional create was accepted")
        except OperationOutcome as e:
            check(e.resource["issue"][0]["code"] == "invalid", f"{e.resource}")
        total = client.resources("Patient").search(identifier=f"{ident['system']}|dup").limit(0).fetch_raw()["total"]
        check(total == 1, f"{total} patients with the identifier")

    return [
        ("fhirpy create/read/update", create_read_update),
        ("fhirpy If-Match update (412 when stale)", if_match),
        ("fhirpy delete", delete),
        ("fhirpy search and paging by link.next", search_paging),
        ("fhirpy carebundle transaction", transaction),
        ("fhirpy errors are OperationOutcomes", errors),
    ]


def main():
    if not BASE.startswith("http"):
        print("MEDVAULT_FHIR_BASE must be set to the server's FHIR base URL", file=sys.stderr)
        return 2
    if not os.path.isdir(BUNDLES):
        print("CAREBUNDLE_DIR must name a directory of carebundle bundles", file=sys.stderr)
        return 2
    passed, failed = 0, 0
    for name, fn in fhirclient_checks() + fhirpy_checks():
        try:
            fn()
            passed += 1
            print(f"ok   {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported, then counted
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stdout)
    print(f"python clients: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

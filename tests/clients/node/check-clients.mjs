// Drive a running medvault with the unmodified npm FHIR client `fhir-kit-client`, used the
// way its documentation shows: capability statement, SMART discovery, create (Location
// header), read, vread, update with If-Match (412 when stale), JSON Patch, search with paging
// by link.next (GET and POST _search), history, a carebundle transaction, a batch, delete
// with If-Match, and errors (400, 404, 405, 410, 412, 415) answered with an OperationOutcome.
//
// Environment:
//   MEDVAULT_FHIR_BASE  e.g. http://127.0.0.1:8200/fhir (required)
//   CAREBUNDLE_DIR      directory of transaction Bundles written by `carebundle generate`
//                       (required; this script uses the third, sorted by name)
//
// Exits 0 when every check passed, 1 otherwise, printing what failed.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

import { Client } from 'fhir-kit-client';

const BASE = (process.env.MEDVAULT_FHIR_BASE || '').replace(/\/+$/, '');
const BUNDLES = process.env.CAREBUNDLE_DIR || '';
const TAG = randomUUID().slice(0, 8).replace(/[^a-z]/g, 'x');
const family = `Kitnode${TAG}`;

const client = new Client({ baseUrl: BASE });

function loadBundle(index) {
  const files = readdirSync(BUNDLES).filter((f) => f.endsWith('.json')).sort();
  assert.ok(files.length > index, `need at least ${index + 1} carebundle bundles in ${BUNDLES}`);
  return JSON.parse(readFileSync(join(BUNDLES, files[index]), 'utf8'));
}

/** Await a call that must fail with `status` and an OperationOutcome body. */
async function expectOutcome(promise, status) {
  let err;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected HTTP ${status}, but the call succeeded`);
  assert.ok(err.response, `expected an HTTP error, got ${err}`);
  assert.equal(err.response.status, status, `status: ${JSON.stringify(err.response.data)}`);
  const ctype = err.config.headers.get('content-type') || '';
  assert.ok(ctype.startsWith('application/fhir+json'), `error Content-Type ${ctype}`);
  assert.equal(err.response.data.resourceType, 'OperationOutcome');
  assert.ok(err.response.data.issue?.[0]?.code, 'issue code');
  return err.response.data;
}

function headers(resource) {
  return Client.httpFor(resource).response.headers;
}

const state = {};

const checks = [
  ['capability statement', async () => {
    const cap = await client.capabilityStatement();
    assert.equal(cap.resourceType, 'CapabilityStatement');
    assert.equal(cap.fhirVersion, '4.0.1');
    assert.ok(cap.rest[0].resource.some((r) => r.type === 'Patient'));
  }],

  ['SMART discovery under the base', async () => {
    // smartAuthMetadata() races this document against the CapabilityStatement and
    // openid-configuration and takes whichever answers first, so the document is asked for
    // directly, at the path smartAuthMetadata() uses.
    const wellKnown = await client.request('.well-known/smart-configuration', {
      options: { headers: { accept: 'application/json' } },
    });
    assert.equal(wellKnown.token_endpoint, `${new URL(BASE).origin}/auth/token`);
    const meta = await client.smartAuthMetadata();
    assert.ok(typeof meta === 'object');
  }],

  ['create, read, vread', async () => {
    const created = await client.create({
      resourceType: 'Patient',
      body: {
        resourceType: 'Patient',
        name: [{ family, given: ['Cy'] }],
        gender: 'unknown',
        birthDate: '2001-12-31',
      },
    });
    assert.ok(created.id, 'no id in the created body');
    assert.equal(created.meta.versionId, '1');
    const h = headers(created);
    assert.equal(h.get('location'), `${BASE}/Patient/${created.id}/_history/1`);
    assert.equal(h.get('etag'), 'W/"1"');
    assert.ok(h.get('content-type').startsWith('application/fhir+json'));
    state.id = created.id;

    const read = await client.read({ resourceType: 'Patient', id: created.id });
    assert.equal(read.name[0].family, family);
    assert.equal(headers(read).get('etag'), 'W/"1"');
    const v1 = await client.vread({ resourceType: 'Patient', id: created.id, version: '1' });
    assert.equal(v1.meta.versionId, '1');
  }],

  ['update with If-Match (412 when stale)', async () => {
    const current = await client.read({ resourceType: 'Patient', id: state.id });
    current.gender = 'female';
    const updated = await client.update({
      resourceType: 'Patient',
      id: state.id,
      body: current,
      options: { headers: { 'If-Match': 'W/"1"' } },
    });
    assert.equal(updated.meta.versionId, '2');
    assert.equal(headers(updated).get('etag'), 'W/"2"');

    current.gender = 'male';
    await expectOutcome(
      client.update({
        resourceType: 'Patient',
        id: state.id,
        body: current,
        options: { headers: { 'If-Match': 'W/"1"' } },
      }),
      412,
    );
    const after = await client.read({ resourceType: 'Patient', id: state.id });
    assert.equal(after.gender, 'female', 'a stale update changed the resource');
  }],

  ['JSON Patch', async () => {
    const patched = await client.patch({
      resourceType: 'Patient',
      id: state.id,
      jsonPatch: [{ op: 'replace', path: '/gender', value: 'other' }],
    });
    assert.equal(patched.gender, 'other');
    assert.equal(patched.meta.versionId, '3');
  }],

  ['history', async () => {
    const hist = await client.resourceHistory({ resourceType: 'Patient', id: state.id });
    assert.equal(hist.type, 'history');
    assert.equal(hist.total, 3);
  }],

  ['search and paging by link.next', async () => {
    const made = new Set();
    for (let i = 0; i < 5; i++) {
      const r = await client.create({
        resourceType: 'Patient',
        body: { resourceType: 'Patient', name: [{ family: `${family}page`, given: [`R${i}`] }] },
      });
      made.add(r.id);
    }
    let page = await client.search({
      resourceType: 'Patient',
      searchParams: { family: `${family}page`, _count: 2 },
    });
    assert.equal(page.type, 'searchset');
    assert.equal(page.total, 5);
    const seen = [];
    let pages = 0;
    while (page) {
      pages += 1;
      assert.ok(pages <= 5, 'paging does not end');
      for (const e of page.entry || []) {
        seen.push(e.resource.id);
        assert.ok(e.fullUrl.startsWith(`${BASE}/Patient/`), `fullUrl ${e.fullUrl}`);
      }
      page = await client.nextPage({ bundle: page });
    }
    assert.equal(pages, 3);
    assert.deepEqual(seen.sort(), [...made].sort());

    // The same search as a POST to _search, as fhir-kit-client sends it.
    const posted = await client.search({
      resourceType: 'Patient',
      searchParams: { family: `${family}page` },
      options: { postSearch: true },
    });
    assert.equal(posted.total, 5);
  }],

  ['carebundle transaction', async () => {
    const raw = loadBundle(2);
    const resp = await client.transaction({ body: raw });
    assert.equal(resp.type, 'transaction-response');
    assert.equal(resp.entry.length, raw.entry.length);
    for (const e of resp.entry) {
      assert.ok(e.response.status.startsWith('201'), e.response.status);
    }
    const patientLoc = resp.entry[0].response.location;
    assert.match(patientLoc, /^Patient\/[^/]+\/_history\/1$/);
    const pid = patientLoc.split('/')[1];
    const patient = await client.read({ resourceType: 'Patient', id: pid });
    const want = raw.entry[0].resource;
    assert.equal(patient.name[0].family, want.name[0].family);

    const nObs = raw.entry.filter((e) => e.resource.resourceType === 'Observation').length;
    let page = await client.search({
      resourceType: 'Observation',
      searchParams: { patient: pid, _count: 10 },
    });
    let total = 0;
    while (page) {
      for (const e of page.entry || []) {
        assert.equal(e.resource.subject.reference, `Patient/${pid}`);
        total += 1;
      }
      page = await client.nextPage({ bundle: page });
    }
    assert.equal(total, nObs);
  }],

  ['batch with one bad entry', async () => {
    const resp = await client.batch({
      body: {
        resourceType: 'Bundle',
        type: 'batch',
        entry: [
          {
            resource: { resourceType: 'Patient', name: [{ family: `${family}batch` }] },
            request: { method: 'POST', url: 'Patient' },
          },
          {
            resource: { resourceType: 'Patient', gender: 'robot' },
            request: { method: 'POST', url: 'Patient' },
          },
        ],
      },
    });
    assert.equal(resp.type, 'batch-response');
    assert.ok(resp.entry[0].response.status.startsWith('201'));
    assert.ok(resp.entry[1].response.status.startsWith('400'));
    assert.equal(resp.entry[1].response.outcome.resourceType, 'OperationOutcome');
  }],

  ['delete (If-Match checked)', async () => {
    await expectOutcome(
      client.delete({ resourceType: 'Patient', id: state.id, options: { headers: { 'If-Match': 'W/"1"' } } }),
      412,
    );
    await client.delete({ resourceType: 'Patient', id: state.id, options: { headers: { 'If-Match': 'W/"3"' } } });
    await expectOutcome(client.read({ resourceType: 'Patient', id: state.id }), 410);
  }],

  ['errors are OperationOutcomes', async () => {
    const nf = await expectOutcome(client.read({ resourceType: 'Patient', id: 'does-not-exist' }), 404);
    assert.equal(nf.issue[0].code, 'not-found');
    await expectOutcome(
      client.create({ resourceType: 'Patient', body: { resourceType: 'Patient', birthDate: '1980-02-30' } }),
      400,
    );
    await expectOutcome(
      client.search({ resourceType: 'Patient', searchParams: { 'not-a-parameter': 1 } }),
      400,
    );
    await expectOutcome(
      client.request('Patient', {
        method: 'POST',
        body: '<Patient xmlns="http://hl7.org/fhir"/>',
        options: { headers: { 'content-type': 'application/fhir+xml' } },
      }),
      415,
    );
    await expectOutcome(client.request('Patient', { method: 'DELETE' }), 405);
    await expectOutcome(
      client.request('Patient', { method: 'POST', body: '{not json', options: { headers: { 'content-type': 'application/fhir+json' } } }),
      400,
    );
  }],
];

async function main() {
  if (!BASE.startsWith('http')) {
    console.error('MEDVAULT_FHIR_BASE must be set to the server\'s FHIR base URL');
    process.exit(2);
  }
  if (!BUNDLES) {
    console.error('CAREBUNDLE_DIR must name a directory of carebundle bundles');
    process.exit(2);
  }
  let passed = 0;
  let failed = 0;
  for (const [name, fn] of checks) {
    try {
      await fn();
      passed += 1;
      console.log(`ok   fhir-kit-client ${name}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL fhir-kit-client ${name}: ${e.stack || e}`);
      if (e.response) console.log(`     response: ${e.response.status} ${JSON.stringify(e.response.data)}`);
    }
  }
  console.log(`node client: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();

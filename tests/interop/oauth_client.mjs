#!/usr/bin/env node
// OAuth interop driver on the official MCP TypeScript SDK (@modelcontextprotocol/sdk, see package.json):
// an OAuthClientProvider of its own with StreamableHTTPClientTransport's `authProvider`, the way an
// application uses them: connect, catch UnauthorizedError, `transport.finishAuth(code)`, connect again.
//
// Connects to agentskills-mcp's Streamable HTTP endpoint with no token, so that the SDK discovers
// the protected resource and authorization server metadata, registers (--registration dcr: dynamic
// client registration) or not (cimd: the client_id is the URL of a client ID metadata document this
// script serves on a loopback http server), and sends the person to the authorization URL; here
// `redirectToAuthorization` plays the person over HTTP (a cookie jar; the sign-in form, the consent
// form, allow) and keeps the code from the redirect, which it does not follow. Phases, one line per check:
//
// 1. first connection: UnauthorizedError, the person signs in and allows, finishAuth stores tokens (a
//    refresh token, both scopes); connect again; tools/list, load_skill_metadata, load_skill of every
//    skill as uploaded;
// 2. the access token stops working (replaced by a bad one): the 401 makes the SDK refresh (rotated,
//    nobody asked) and the call goes through;
// 3. a restarted client (a new provider on the same store): no 401, nobody asked;
// 4. the refresh token revoked (RFC 7009) and the access token bad: the SDK's refresh fails with
//    invalid_grant, it asks the person again (still signed in: consent only), finishAuth, connect again.
//
//   node oauth_client.mjs --url http://127.0.0.1:8000/mcp --registration dcr --user ann --password PW --skills DIR
//
// SDK 1.32.2 takes `clientMetadataUrl` only as an https URL (auth() throws for any other), and the
// document is served here over http on loopback (which the server fetches only with
// AGENTSKILLS_OAUTH_CIMD_ALLOW_LOOPBACK=true). So for cimd the provider's `clientInformation()`
// answers `{client_id: <the document's URL>}` from the start, as for a pre-registered client: the SDK
// then registers nothing and sends that client_id, which is what its own CIMD path does too.
//
// The SDK is loaded from $INTEROP_DEPS/node_modules (run.sh installs it there). Node 20 or later
// (fetch, Headers.getSetCookie).
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';

const DEPS = process.env.INTEROP_DEPS || join(process.env.HOME || '/root', '.cache', 'agentskills-interop');
const require = createRequire(join(DEPS, 'package.json'));
const sdk = (p) => import(pathToFileURL(require.resolve(`@modelcontextprotocol/sdk/${p}`)).href);
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { UnauthorizedError } = await sdk('client/auth.js');

const { values: a } = parseArgs({
  options: {
    url: { type: 'string' },
    registration: { type: 'string', default: 'dcr' }, // dcr | cimd
    user: { type: 'string' },
    password: { type: 'string' },
    skills: { type: 'string' },
    timeout: { type: 'string', default: '60000' }
  }
});
if (!a.url || !a.user || !a.password || !a.skills || !['dcr', 'cimd'].includes(a.registration)) {
  console.error('usage: node oauth_client.mjs --url URL/mcp [--registration dcr|cimd] --user NAME --password PW --skills DIR');
  process.exit(64);
}
const BASE = new URL(a.url).origin;
const SCOPES = ['skills:read', 'skills:run'];
const CLIENT_NAME = `agentskills interop: typescript sdk, ${a.registration}`;

// Each sub-folder with a SKILL.md: its front matter's name and description, and its files.
function loadExpected(root) {
  const walk = (d) => readdirSync(d).sort().flatMap((n) => {
    const p = join(d, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
  const skills = readdirSync(root).sort().filter((n) => existsSync(join(root, n, 'SKILL.md'))).map((n) => {
    const dir = join(root, n);
    const front = readFileSync(join(dir, 'SKILL.md'), 'utf8').split('---')[1];
    const field = (k) => front.match(new RegExp(`^${k}:\\s*(.+?)\\s*$`, 'm'))[1];
    const files = Object.fromEntries(walk(dir).map((p) => [relative(dir, p).split(sep).join('/'), readFileSync(p, 'utf8')]));
    return { name: field('name'), description: field('description'), files };
  });
  if (!skills.length) throw new Error(`no skills under ${root}`);
  return skills;
}

let failed = 0;
function check(ok, what, detail = '') {
  console.log(`  ${ok ? 'ok  ' : 'FAIL'} ${what}${ok || !detail ? '' : ': ' + detail}`);
  if (!ok) failed++;
  return ok;
}
const textOf = (res) => res.content.map((c) => c.text ?? '').join('');
const oneLine = (s, n = 300) => String(s).replace(/\s+/g, ' ').slice(0, n);
class FlowError extends Error {
  name = 'FlowError';
}

// --- the person: a browser with a cookie jar, reading each step as it comes ------------------------
const ENTITIES = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'", nbsp: '\u00a0' };
const unescape = (s) => s.replace(/&(#x[0-9a-f]+|#[0-9]+|[a-z]+);/gi, (m, e) =>
  e[0] !== '#' ? ENTITIES[e.toLowerCase()] ?? m : String.fromCodePoint(e[1].toLowerCase() === 'x' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10)));
function attrs(tag) {
  const out = {};
  for (const m of tag.matchAll(/([^\s"'<>\/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g)) {
    out[m[1].toLowerCase()] = unescape(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return out;
}
// The form with this id: its action, method, the named inputs (hidden and others) and submit buttons.
function formById(html, id, where) {
  for (const m of html.matchAll(/<form\b([^>]*)>([\s\S]*?)<\/form>/gi)) {
    const f = attrs(m[1]);
    if (f.id !== id) continue;
    const fields = [];
    const buttons = [];
    for (const t of m[2].matchAll(/<(input|button)\b([^>]*)>/gi)) {
      const x = attrs(t[2]);
      if (!('name' in x)) continue;
      const type = (x.type ?? (t[1].toLowerCase() === 'button' ? 'submit' : 'text')).toLowerCase();
      if (type === 'submit' || type === 'image') buttons.push([x.name, x.value ?? '']);
      else if (!['checkbox', 'radio'].includes(type) || 'checked' in x) fields.push([x.name, x.value ?? '']);
    }
    return { action: f.action, method: (f.method ?? 'get').toLowerCase(), fields: Object.fromEntries(fields), buttons };
  }
  throw new FlowError(`${where}: no <form id="${id}">; the page says ${JSON.stringify(pageText(html))}`);
}

class Browser {
  constructor() { this.jar = new Map(); }
  async fetch(url, init = {}) {
    const headers = new Headers(init.headers);
    if (this.jar.size) headers.set('cookie', [...this.jar].map(([k, v]) => `${k}=${v}`).join('; '));
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i).trim();
      const value = pair.slice(i + 1).trim();
      if (/max-age=0\b|expires=thu, 01 jan 1970/i.test(c) || value === '') this.jar.delete(name);
      else this.jar.set(name, value);
    }
    return res;
  }
}
// What a page says to the person: its alert if it has one, else its text without the markup.
function pageText(html) {
  const alert = html.match(/<[^>]*\brole="alert"[^>]*>([\s\S]*?)<\//);
  const text = alert ? alert[1] : html.replace(/<(script|style|head)\b[\s\S]*?<\/\1>/gi, ' ');
  return (alert ? 'alert: ' : '') + oneLine(unescape(text.replace(/<[^>]+>/g, ' ')), 240).trim();
}
const describe = async (res, method, url) => {
  const loc = res.headers.get('location');
  return `${method} ${url.split('?')[0]} -> ${res.status}${loc ? ` Location: ${loc}` : ` ${JSON.stringify(pageText(await res.text()))}`}`;
};

async function playUser(browser, authorizeUrl, login, password) {
  const asked = new URL(authorizeUrl);
  const origin = asked.origin;
  const params = Object.fromEntries(asked.searchParams);
  let res = await browser.fetch(authorizeUrl);
  let pageUrl = authorizeUrl;
  let signedIn = false;
  const loc = res.headers.get('location');
  if ([302, 303].includes(res.status) && loc && new URL(loc, origin).pathname === '/signin') {
    const signinUrl = new URL(loc, origin).href;
    const next = new URL(signinUrl).searchParams.get('next') ?? '';
    if (res.status !== 303 || new URL(next, origin).pathname !== asked.pathname) {
      throw new FlowError(`not signed in: want 303 to /signin?next=<the authorize request>, got ${await describe(res, 'GET', authorizeUrl)}`);
    }
    res = await browser.fetch(signinUrl);
    if (res.status !== 200) throw new FlowError(`sign-in page: ${await describe(res, 'GET', signinUrl)}`);
    const form = formById(await res.text(), 'signin-form', 'sign-in page');
    if (form.method !== 'post' || !form.fields.csrf || !form.fields.next) {
      throw new FlowError(`sign-in form: method ${form.method}, fields ${Object.keys(form.fields)} (want post with csrf, next)`);
    }
    const action = new URL(form.action ?? signinUrl, signinUrl).href;
    res = await browser.fetch(action, {
      method: 'POST', headers: { origin, 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ ...form.fields, login, password })
    });
    const back = res.headers.get('location');
    if (res.status !== 303 || !back) throw new FlowError(`sign-in as ${login}: want 303 to next, got ${await describe(res, 'POST', action)}`);
    pageUrl = new URL(back, action).href;
    if (new URL(pageUrl).pathname !== asked.pathname) throw new FlowError(`sign-in: redirected to ${back}, not back to the authorize request`);
    console.log(`  ok   signed in as ${login} (sign-in form, 303 back to the authorize request)`);
    signedIn = true;
    res = await browser.fetch(pageUrl);
  }
  if (res.status !== 200) throw new FlowError(`consent page: want 200, got ${await describe(res, 'GET', pageUrl)}`);
  const page = await res.text();
  const form = formById(page, 'consent-form', 'consent page');
  if (form.method !== 'post' || !form.fields.csrf) {
    throw new FlowError(`consent form: method ${form.method}, fields ${Object.keys(form.fields)} (want post with csrf)`);
  }
  const lost = Object.keys(params).filter((k) => form.fields[k] !== params[k]);
  if (lost.length) throw new FlowError(`consent form: request parameters missing or changed: ${lost} (form has ${Object.keys(form.fields)})`);
  if (!form.buttons.some(([n, v]) => n === 'decision' && v === 'allow')) {
    throw new FlowError(`consent form: no submit button decision=allow (buttons ${JSON.stringify(form.buttons)})`);
  }
  if (!page.includes(CLIENT_NAME)) throw new FlowError(`consent page does not name the client ${JSON.stringify(CLIENT_NAME)}`);
  console.log(`  ok   consent page: #consent-form carries csrf and the request's ${Object.keys(params).length} parameters, names the client`);
  const action = new URL(form.action ?? pageUrl, pageUrl).href;
  res = await browser.fetch(action, {
    method: 'POST', headers: { origin, 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ ...form.fields, decision: 'allow' })
  });
  const location = res.headers.get('location');
  if (res.status !== 303 || !location) throw new FlowError(`consent allow: want 303 to the redirect_uri, got ${await describe(res, 'POST', action)}`);
  if (location.split('?')[0] !== params.redirect_uri) throw new FlowError(`consent allow: redirected to ${location}, not to ${params.redirect_uri}`);
  const got = new URL(location).searchParams;
  const twice = [...new Set(got.keys())].filter((k) => got.getAll(k).length > 1);
  if (twice.length) throw new FlowError(`consent allow: parameters repeated in the redirect: ${twice}`);
  if (params.state !== undefined && got.get('state') !== params.state) throw new FlowError(`consent allow: state ${got.get('state')}, want ${params.state}`);
  if (got.get('iss') !== origin) throw new FlowError(`consent allow: iss ${got.get('iss')}, want ${origin} (RFC 9207)`);
  if (!got.get('code')) throw new FlowError(`consent allow: no code (error=${got.get('error')})`);
  console.log(`  ok   consent allow: 303 to the redirect_uri with ${[...got.keys()].sort().join(', ')}`);
  return { location, code: got.get('code'), state: got.get('state'), signedIn };
}

// --- the client's own site: its client ID metadata document and its redirect URI ------------------
async function startSite() {
  const site = { fetches: 0 };
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (path === '/oauth/client-metadata.json') {
      site.fetches++;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(site.document));
    } else if (path === '/callback') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('You can close this window.');
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const origin = `http://127.0.0.1:${server.address().port}`;
  Object.assign(site, {
    server,
    metadataUrl: `${origin}/oauth/client-metadata.json`,
    redirectUri: `${origin}/callback`
  });
  site.document = {
    client_id: site.metadataUrl, client_name: CLIENT_NAME, client_uri: origin, redirect_uris: [site.redirectUri],
    grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], token_endpoint_auth_method: 'none'
  };
  return site;
}

// --- the OAuthClientProvider: its store is `store`, shared by every provider (a client restarting) ---
class Provider {
  constructor(store, site, person) {
    Object.assign(this, { store, site, person });
  }
  get redirectUrl() { return this.site.redirectUri; }
  get clientMetadata() {
    return {
      client_name: CLIENT_NAME, redirect_uris: [this.site.redirectUri], grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'], token_endpoint_auth_method: 'none'
    };
  }
  state() { return (this.store.state = randomBytes(24).toString('base64url')); }
  clientInformation() {
    return this.store.client ?? (a.registration === 'cimd' ? { client_id: this.site.metadataUrl } : undefined);
  }
  saveClientInformation(info) {
    if (!this.store.client && a.registration === 'dcr') this.store.registered++;
    this.store.client = info;
  }
  tokens() { return this.store.tokens; }
  saveTokens(tokens) { this.store.tokens = tokens; this.store.saves++; }
  async redirectToAuthorization(url) {
    console.log('  ..   the SDK redirects to the authorization URL: the person signs in and allows');
    this.store.asked.push(url.href);
    const done = await playUser(this.person.browser, url.href, a.user, a.password);
    if (done.state !== this.store.state) throw new FlowError(`state ${done.state}, want ${this.store.state}`);
    this.person.plays.push(done);
  }
  saveCodeVerifier(v) { this.store.verifier = v; }
  codeVerifier() { return this.store.verifier; }
  saveDiscoveryState(s) { this.store.discovery = s; }
  invalidateCredentials(scope) {
    this.store.invalidated.push(scope);
    if (scope === 'all' || scope === 'tokens') this.store.tokens = undefined;
    if (scope === 'all' || scope === 'client') this.store.client = undefined;
  }
}

// --- the run ------------------------------------------------------------------------------------------
const requests = [];
const loggingFetch = async (url, init) => {
  const res = await fetch(url, init);
  requests.push(`${init?.method ?? 'GET'} ${String(url).split('?')[0]} -> ${res.status}`);
  return res;
};
const opts = { timeout: Number(a.timeout) };

async function connect(provider) {
  const transport = new StreamableHTTPClientTransport(new URL(a.url), { authProvider: provider, fetch: loggingFetch });
  const client = new Client({ name: 'agentskills-interop-oauth', version: '1.0.0' }, { capabilities: {} });
  await client.connect(transport, opts);
  return { client, transport };
}

// Connects; on UnauthorizedError the person has been through the authorization: finishAuth, and again.
async function connectAuthorizing(provider, person) {
  const transport = new StreamableHTTPClientTransport(new URL(a.url), { authProvider: provider, fetch: loggingFetch });
  const client = new Client({ name: 'agentskills-interop-oauth', version: '1.0.0' }, { capabilities: {} });
  const plays = person.plays.length;
  try {
    await client.connect(transport, opts);
    return { client, transport, authorized: false };
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
    if (person.plays.length !== plays + 1) throw new Error(`UnauthorizedError, but ${person.plays.length - plays} redirects to the authorization URL: ${e.message}`);
    await transport.finishAuth(person.plays.at(-1).code);
    return { ...(await connect(provider)), authorized: true };
  }
}

async function useTools(client, skills, everything) {
  const call = (name, args) => client.callTool({ name, arguments: args }, undefined, opts);
  if (everything) {
    const tools = new Set((await client.listTools(undefined, opts)).tools.map((t) => t.name));
    check(['load_skill_metadata', 'load_skill', 'run_shell_command'].every((n) => tools.has(n)),
      `tools/list: ${tools.size} tools (run_shell_command too: skills:run granted)`, `got ${[...tools]}`);
  }
  const res = await call('load_skill_metadata', {});
  const lines = textOf(res).split('\n');
  const absent = skills.map((s) => `- ${s.name}: ${s.description}`).filter((l) => !lines.includes(l));
  check(!res.isError && !absent.length, 'load_skill_metadata lists every skill',
    `isError=${res.isError}, missing ${JSON.stringify(absent)}, got ${JSON.stringify(oneLine(textOf(res)))}`);
  for (const s of everything ? skills : skills.slice(0, 1)) {
    const r = await call('load_skill', { skill_name: s.name });
    check(!r.isError && textOf(r) === s.files['SKILL.md'], `load_skill ${s.name} = SKILL.md as uploaded`,
      `isError=${r.isError}, got ${JSON.stringify(oneLine(textOf(r), 200))}`);
  }
}

async function main() {
  const skills = loadExpected(a.skills);
  const version = JSON.parse(readFileSync(join(DEPS, 'node_modules/@modelcontextprotocol/sdk/package.json'), 'utf8')).version;
  console.log(`@modelcontextprotocol/sdk ${version} OAuthClientProvider, streamable http, ${a.registration}: ${a.url}`);
  const site = await startSite();
  const person = { browser: new Browser(), plays: [] };
  const store = { registered: 0, saves: 0, asked: [], invalidated: [] };
  try {
    console.log('first connection: the full flow');
    let provider = new Provider(store, site, person);
    let { client, authorized } = await connectAuthorizing(provider, person);
    check(authorized && person.plays.length === 1 && person.plays[0].signedIn, 'UnauthorizedError, the person signed in and allowed, finishAuth',
      `authorized ${authorized}, authorizations ${person.plays.length}`);
    const d = store.discovery ?? {};
    check(d.resourceMetadata?.resource === a.url && String(d.authorizationServerUrl).replace(/\/$/, '') === BASE,
      `protected resource metadata: resource ${a.url}, authorization server ${BASE}`, JSON.stringify(d.resourceMetadata));
    const asm = d.authorizationServerMetadata ?? {};
    check(asm.issuer === BASE && asm.client_id_metadata_document_supported === true && asm.code_challenge_methods_supported?.includes('S256'),
      `authorization server metadata: issuer ${BASE}, S256, client ID metadata documents`, JSON.stringify(asm));
    const asked = new URL(store.asked[0] ?? 'http://x');
    check(asked.searchParams.get('resource') === a.url && asked.searchParams.get('code_challenge_method') === 'S256',
      `the authorization request: resource ${a.url}, S256`, asked.search);
    if (a.registration === 'cimd') {
      check(store.client?.client_id === site.metadataUrl && !requests.some((l) => l.startsWith(`POST ${asm.registration_endpoint} `)) && site.fetches >= 1,
        `client ID metadata document: client_id is its URL, the server fetched it (${site.fetches}x), no registration`,
        `client_id ${store.client?.client_id}, fetches ${site.fetches}`);
    } else {
      check(store.registered === 1 && store.client?.client_id && store.client.client_id !== site.metadataUrl,
        `dynamic client registration: client_id ${store.client?.client_id}`, `registrations ${store.registered}`);
    }
    const t = store.tokens ?? {};
    const scopes = new Set((t.scope ?? '').split(' '));
    check(t.access_token && t.refresh_token && SCOPES.every((s) => scopes.has(s)) && t.expires_in > 0 && /^bearer$/i.test(t.token_type),
      'the token store holds a Bearer access token, a refresh token, both scopes, an expiry',
      `refresh_token ${t.refresh_token ? 'set' : 'missing'}, scope ${t.scope}, expires_in ${t.expires_in}, token_type ${t.token_type}`);
    await useTools(client, skills, true);

    console.log('the access token stops working: the SDK refreshes');
    const before = store.tokens;
    let mark = requests.length;
    store.tokens = { ...before, access_token: `expired-${randomBytes(8).toString('hex')}` };
    await useTools(client, skills, false);
    const after = store.tokens;
    const refreshed = requests.slice(mark).filter((l) => l.startsWith(`POST ${asm.token_endpoint} `));
    check(person.plays.length === 1 && refreshed.length === 1 && refreshed[0].endsWith('-> 200')
      && after.access_token !== before.access_token && !after.access_token.startsWith('expired-')
      && after.refresh_token && after.refresh_token !== before.refresh_token,
      'the 401 made the SDK refresh: new access and refresh tokens, nobody asked',
      `token requests ${JSON.stringify(refreshed)}, authorizations ${person.plays.length}, refresh token ${after.refresh_token !== before.refresh_token ? 'rotated' : 'the same'}`);
    await client.close();

    console.log('a restarted client: the stored tokens');
    mark = requests.length;
    provider = new Provider(store, site, person);
    ({ client } = await connect(provider));
    await useTools(client, skills, false);
    await client.close();
    const unauthorized = requests.slice(mark).filter((l) => l.endsWith('-> 401'));
    check(person.plays.length === 1 && !unauthorized.length, 'no 401, nobody asked', `401s ${JSON.stringify(unauthorized)}`);

    console.log('the refresh token revoked, the access token bad: the SDK asks the person again');
    const revoked = store.tokens.refresh_token;
    let r = await fetch(asm.revocation_endpoint, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: revoked, token_type_hint: 'refresh_token', client_id: store.client.client_id })
    });
    check(r.status === 200, `POST ${asm.revocation_endpoint} (RFC 7009) -> 200`, `${r.status} ${oneLine(await r.text(), 200)}`);
    store.tokens = { ...store.tokens, access_token: `expired-${randomBytes(8).toString('hex')}` };
    provider = new Provider(store, site, person);
    ({ client, authorized } = await connectAuthorizing(provider, person));
    check(authorized && person.plays.length === 2 && !person.plays[1].signedIn && store.invalidated.includes('tokens'),
      'the refresh failed (invalid_grant), the SDK dropped the tokens and asked the person again (still signed in: consent only), finishAuth',
      `authorized ${authorized}, authorizations ${person.plays.length}, invalidated ${store.invalidated}`);
    await useTools(client, skills, false);
    check(store.tokens?.refresh_token && store.tokens.refresh_token !== revoked, 'new tokens in the store');
    await client.close();
  } catch (e) {
    check(false, `${e.name}`, e.message);
  } finally {
    site.server.close();
  }
  if (failed) {
    console.log('  the SDK\'s requests:');
    for (const l of requests.slice(-40)) console.log(`    ${l}`);
  }
  process.exit(failed ? 1 : 0);
}
await main();

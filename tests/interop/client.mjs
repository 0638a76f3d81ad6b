#!/usr/bin/env node
// Interop driver on the official MCP TypeScript SDK (@modelcontextprotocol/sdk, see package.json).
//
// Connects to agentskills-mcp, then checks what it serves against the skill folders in --skills:
// tools/list, load_skill_metadata, load_skill and read_reference_file for every file of every
// skill, resources/list and resources/read, and an unknown skill as an error. Prints one line per
// check and exits 1 if any check fails or the connection breaks.
//
//   node client.mjs --url http://127.0.0.1:8000/mcp --skills DIR                 # Streamable HTTP
//   node client.mjs --url http://127.0.0.1:8000/sse --transport sse --protocol-version 2024-11-05 --skills DIR
//   node client.mjs --transport stdio --skills DIR -- agentskills-mcp stdio --skills-dir DIR
//
// The bearer token comes from $MCP_TOKEN (or --token). The SDK is loaded from
// $INTEROP_DEPS/node_modules (run.sh installs it there).
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { readdirSync, readFileSync, statSync, existsSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';

const DEPS = process.env.INTEROP_DEPS || join(process.env.HOME || '/root', '.cache', 'agentskills-interop');
const require = createRequire(join(DEPS, 'package.json'));
const sdk = (p) => import(pathToFileURL(require.resolve(`@modelcontextprotocol/sdk/${p}`)).href);
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { SSEClientTransport } = await sdk('client/sse.js');
const { StdioClientTransport } = await sdk('client/stdio.js');

const { values: a, positionals: command } = parseArgs({
  allowPositionals: true,
  options: {
    url: { type: 'string' },
    transport: { type: 'string', default: 'streamable-http' }, // streamable-http | sse | stdio
    token: { type: 'string', default: process.env.MCP_TOKEN },
    skills: { type: 'string' },
    'protocol-version': { type: 'string' }, // the version to offer in initialize
    timeout: { type: 'string', default: '60000' }
  }
});
if (!a.skills || (a.transport === 'stdio') !== command.length > 0 || (a.transport !== 'stdio' && !a.url)) {
  console.error('usage: node client.mjs --skills DIR (--url URL [--transport sse] | --transport stdio -- COMMAND...)');
  process.exit(64);
}
const TOOLS = ['load_skill_metadata', 'load_skill', 'read_reference_file', 'run_shell_command'];

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
function checkEqual(got, want, what) {
  if (got === want) return check(true, what);
  let i = 0;
  while (i < got.length && i < want.length && got[i] === want[i]) i++;
  const cut = (s) => JSON.stringify(s.slice(Math.max(0, i - 20), i + 40));
  return check(false, what, `differs at char ${i} (got ${got.length} chars, want ${want.length}): got ${cut(got)}, want ${cut(want)}`);
}
const textOf = (res) => res.content.map((c) => c.text ?? '').join('');

async function allPages(fn, key, opts) {
  const items = [];
  let cursor;
  for (let i = 0; i < 100; i++) {
    const res = await fn(cursor ? { cursor } : undefined, opts);
    items.push(...res[key]);
    cursor = res.nextCursor;
    if (!cursor) break;
  }
  return items;
}

async function main() {
  const skills = loadExpected(a.skills);
  const opts = { timeout: Number(a.timeout) };
  const requestInit = { headers: a.token ? { Authorization: `Bearer ${a.token}` } : {} };
  const transport = a.transport === 'stdio'
    ? new StdioClientTransport({ command: command[0], args: command.slice(1), env: { ...process.env } })
    : a.transport === 'sse'
      ? new SSEClientTransport(new URL(a.url), { requestInit })
      : new StreamableHTTPClientTransport(new URL(a.url), { requestInit });
  const client = new Client({ name: 'agentskills-interop', version: '1.0.0' }, { capabilities: {} });
  // The SDK offers its latest version; --protocol-version offers another, and the answer is kept.
  let negotiated;
  const request = client.request.bind(client);
  client.request = async (req, schema, o) => {
    if (req.method === 'initialize' && a['protocol-version']) req.params.protocolVersion = a['protocol-version'];
    const res = await request(req, schema, o);
    if (req.method === 'initialize') negotiated = res.protocolVersion;
    return res;
  };
  const version = JSON.parse(readFileSync(join(DEPS, 'node_modules/@modelcontextprotocol/sdk/package.json'), 'utf8')).version;
  console.log(`@modelcontextprotocol/sdk ${version}, ${a.transport}: ${(a.url ?? command.join(' ')).replace(/ask_live_[0-9a-f]+/g, 'ask_live_…')}`);
  try {
    await client.connect(transport, opts);
    check(client.getServerVersion()?.name === 'agentskills-mcp', `initialize: ${negotiated}`,
      `serverInfo ${JSON.stringify(client.getServerVersion())}`);
    if (a['protocol-version']) check(negotiated === a['protocol-version'], `negotiated the offered ${a['protocol-version']}`, `got ${negotiated}`);
    await client.ping(opts);
    check(true, 'ping');

    const tools = new Map((await allPages((p, o) => client.listTools(p, o), 'tools', opts)).map((t) => [t.name, t]));
    const missing = TOOLS.filter((n) => !tools.get(n)?.description);
    check(!missing.length, `tools/list: ${tools.size} tools`, `missing or without description: ${missing}`);

    const call = (name, args) => client.callTool({ name, arguments: args }, undefined, opts);
    let res = await call('load_skill_metadata', {});
    const lines = textOf(res).split('\n');
    const absent = skills.map((s) => `- ${s.name}: ${s.description}`).filter((l) => !lines.includes(l));
    check(!res.isError && !absent.length, 'load_skill_metadata lists every skill',
      `isError=${res.isError}, missing ${JSON.stringify(absent)}, got ${JSON.stringify(textOf(res).slice(0, 300))}`);

    for (const s of skills) {
      res = await call('load_skill', { skill_name: s.name });
      if (check(!res.isError, `load_skill ${s.name}`, textOf(res).slice(0, 200))) {
        checkEqual(textOf(res), s.files['SKILL.md'], `load_skill ${s.name} = SKILL.md as uploaded`);
      }
      for (const [path, body] of Object.entries(s.files)) {
        if (path === 'SKILL.md') continue;
        res = await call('read_reference_file', { skill_name: s.name, file_name: path });
        if (check(!res.isError, `read_reference_file ${s.name}/${path}`, textOf(res).slice(0, 200))) {
          checkEqual(textOf(res), body, `read_reference_file ${s.name}/${path} = the file`);
        }
      }
    }
    res = await call('load_skill', { skill_name: 'no-such-skill' });
    check(res.isError === true, 'load_skill of an unknown skill is an error', `got ${JSON.stringify(textOf(res).slice(0, 200))}`);

    const resources = new Set((await allPages((p, o) => client.listResources(p, o), 'resources', opts)).map((r) => r.uri));
    const absentUris = skills.flatMap((s) => Object.keys(s.files).map((p) => `skill://${s.name}/${p}`)).filter((u) => !resources.has(u));
    check(!absentUris.length, `resources/list: ${resources.size} resources`, `missing ${JSON.stringify(absentUris)}`);
    for (const s of skills) {
      for (const [path, body] of Object.entries(s.files)) {
        const uri = `skill://${s.name}/${path}`;
        const { contents } = await client.readResource({ uri }, opts);
        checkEqual(contents.map((c) => c.text ?? '').join(''), body, `resources/read ${uri}`);
      }
    }
    if (a.transport === 'streamable-http') await transport.terminateSession();
  } finally {
    await client.close().catch(() => {});
  }
}

main().then(() => process.exit(failed ? 1 : 0)).catch((e) => {
  console.log(`  FAIL ${e?.name ?? 'Error'}: ${e?.message ?? e}`);
  if (process.env.INTEROP_DEBUG) console.error(e);
  process.exit(1);
});

#!/usr/bin/env node
// A reverse proxy that adds `Authorization: Bearer $MCP_TOKEN` to every request, because the official
// conformance runner cannot send headers of its own.
//
//   MCP_TOKEN=ask_live_… node auth-proxy.mjs http://127.0.0.1:8000     # prints "LISTENING http://127.0.0.1:PORT"
//
// Bodies stream both ways unbuffered (SSE included). Origin and any Host other than the proxy's own
// pass through unchanged, so the server's DNS-rebinding checks are what the runner tests.
import http from 'node:http';

const target = new URL(process.argv[2] ?? '');
const token = process.env.MCP_TOKEN;
if (!token) throw new Error('MCP_TOKEN is not set');

const server = http.createServer((req, res) => {
  const own = `127.0.0.1:${server.address().port}`;
  const headers = { ...req.headers, authorization: req.headers.authorization ?? `Bearer ${token}` };
  if (!headers.host || headers.host === own || headers.host === `localhost:${server.address().port}`) {
    headers.host = target.host;
  }
  const up = http.request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (ures) => {
    res.writeHead(ures.statusCode ?? 502, ures.rawHeaders);
    res.flushHeaders();
    ures.pipe(res);
  });
  up.on('error', (e) => {
    if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`auth-proxy: ${e.message}`);
  });
  req.pipe(up);
  res.on('close', () => up.destroy());
});
server.listen(0, '127.0.0.1', () => console.log(`LISTENING http://127.0.0.1:${server.address().port}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));

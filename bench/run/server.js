// The Node worker of `make bench-run` under `forkline run`: Node's own http
// hello world on the socket forkline gives it as fd 3 (LISTEN_FDS=1). Each
// worker has a SO_REUSEPORT socket of its own, so it accepts its own
// connections; forkline's parent is not in the request path. forkline runs
// it with `-ready after=D` (Node has no sd_notify of its own).
//
// Usage: forkline run -workers 2 -ready after=300ms -- node server.js
// Every request is answered as peers/node-cluster.js answers it (the same
// handler, the same headers and body):
//
//	Hello from worker=<FORKLINE_WORKER_ID> pid=<pid> gen=<FORKLINE_GENERATION>
'use strict';
const http = require('node:http');

if (process.env.LISTEN_FDS !== '1' || process.env.LISTEN_PID !== String(process.pid)) {
  console.error(`server.js: want one socket as fd 3 (LISTEN_FDS=1, LISTEN_PID=${process.pid}); ` +
    `got LISTEN_FDS=${process.env.LISTEN_FDS} LISTEN_PID=${process.env.LISTEN_PID}`);
  process.exit(2);
}
const id = process.env.FORKLINE_WORKER_ID || '0';
const gen = process.env.FORKLINE_GENERATION || '0';
const body = `Hello from worker=${id} pid=${process.pid} gen=${gen}\n`;
const server = http.createServer((req, res) => {
  res.writeHead(200, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
  });
  res.end(body);
});
server.listen({ fd: 3 });
// A drain is SIGTERM: stop accepting, finish, exit (bounded).
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeIdleConnections();
  setTimeout(() => process.exit(0), 2000).unref();
});

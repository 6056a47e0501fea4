// An HTTP server in Node's core http module, run by forkline:
//
//     forkline run -workers 2 -ready after=300ms -- node server.js
//
// It serves the socket forkline passes as descriptor 3 (LISTEN_FDS=1,
// LISTEN_PID=its own pid). Node's core has no unix datagram socket, so it
// cannot send READY=1 to $NOTIFY_SOCKET itself: forkline counts it ready
// 300 ms after it started (-ready after=300ms). That is safe even when it is
// late: connections wait in the slot's socket, which forkline keeps, until
// it accepts them.
//
// On SIGTERM it drains: server.close() stops accepting (what is queued stays
// on the socket for the slot's next worker) and the process exits once every
// connection has ended. From then on every response says "Connection: close"
// and closes its connection once sent; an idle keep-alive connection gets
// IDLE_GRACE_MS to send one more request before it is closed.
//
// Run by hand (no LISTEN_FDS) it listens on 127.0.0.1:$PORT (default 8000).
//
// GET / answers "worker=<FORKLINE_WORKER_ID> pid=<pid> gen=<FORKLINE_GENERATION>";
// GET /slow?ms=N answers the same after N milliseconds (default 500).
'use strict';

const http = require('http');

const worker = process.env.FORKLINE_WORKER_ID || '-';
const gen = process.env.FORKLINE_GENERATION || '-';
const IDLE_GRACE_MS = 1000;
let draining = false;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const reply = () => {
    const body = `worker=${worker} pid=${process.pid} gen=${gen}\n`;
    if (draining) res.setHeader('Connection', 'close'); // Node closes it after this response
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  };
  if (url.pathname === '/slow') {
    const ms = Number(url.searchParams.get('ms') || 500);
    console.log(`slow request: ${ms} ms`);
    setTimeout(reply, ms);
  } else {
    reply();
  }
});

if (Number(process.env.LISTEN_FDS) >= 1 && Number(process.env.LISTEN_PID) === process.pid) {
  server.listen({ fd: 3 });
} else {
  server.listen(Number(process.env.PORT || 8000), '127.0.0.1');
}

process.on('SIGTERM', () => {
  draining = true;
  // Since Node 19, server.close() also closes every idle keep-alive
  // connection at once, which races with a client that is sending its next
  // request on one (it would see the connection close with no answer).
  // Give them a grace instead: until then close() only stops accepting, and
  // a connection that sends a request is answered with Connection: close.
  const closeIdle = server.closeIdleConnections && server.closeIdleConnections.bind(server);
  server.closeIdleConnections = () => {};
  server.close(() => process.exit(0));
  if (closeIdle) setTimeout(closeIdle, IDLE_GRACE_MS).unref();
});

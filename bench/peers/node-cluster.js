// Node.js cluster peer of the benchmark: a primary forks WORKERS (default 2)
// workers, each running http.createServer on HOST:PORT. Default scheduling
// (SCHED_RR on Linux): the primary accepts every connection and hands it to a
// worker, so unlike forkline the primary is in the connection path (not in
// the request path once a keep-alive connection is handed over).
// Set NODE_CLUSTER_SCHED_POLICY=none to have the workers share one socket.
//
// Usage: node node-cluster.js [-addr 127.0.0.1:8080] [-workers 2]
// Every request is answered with
//
//	Hello from worker=<cluster.worker.id> pid=<pid> gen=0
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const addr = arg('-addr', '127.0.0.1:8080');
const workers = Number(arg('-workers', '2'));
const sep = addr.lastIndexOf(':');
const host = addr.slice(0, sep);
const port = Number(addr.slice(sep + 1));

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  let stopping = false;
  const stop = () => {
    stopping = true;
    for (const w of Object.values(cluster.workers)) w.kill('SIGTERM');
    // Bounded: exit even if a worker hangs.
    setTimeout(() => process.exit(0), 3000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  cluster.on('exit', () => {
    if (stopping && Object.keys(cluster.workers).length === 0) process.exit(0);
  });
} else {
  const body = `Hello from worker=${cluster.worker.id} pid=${process.pid} gen=0\n`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  });
  server.listen(port, host);
  process.on('SIGTERM', () => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}

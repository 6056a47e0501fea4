// Node.js cluster side of the messaging benchmark (the ipc suite), measured
// the way bench/ipc/forkline measures forkline: 2 workers, worker.send /
// process.send with the default ('json') serialization.
//
//   - round trip: the primary sends a 64-byte string to worker 1, which
//     sends it back; the next one goes when the echo is in; the median of
//     -rt round trips after -warmup (p90, p99 and the CPU time of the
//     primary and of worker 1 per round trip on stderr);
//   - one-way: worker 1 sends -oneway 64-byte strings to the primary as fast
//     as the channel takes them, honouring back-pressure the way Node users
//     do: when process.send returns false (the channel's write queue is over
//     Node's threshold), it stops and resumes from that send's callback;
//     then it sends an end marker. The rate is the strings the primary
//     counted over the time from the primary sending the command to the
//     primary receiving the end marker.
//
// It prints
//
//	node-roundtrip-us <median>
//	node-oneway-msgs-per-s <rate>
//
// on stdout and details on stderr. Every loop is bounded in count and in
// time (-max-ms per flood), the whole run by -timeout-ms (exit status 2).
//
// Usage: node ipc-node.js [-rt 20000] [-warmup 2000] [-oneway 1000000] [-max-ms 3000] [-timeout-ms 120000]
'use strict';
const cluster = require('node:cluster');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? Number(process.argv[i + 1]) : def;
}

const RT = arg('-rt', 20000);
const WARMUP = arg('-warmup', 2000);
const ONEWAY = arg('-oneway', 1000000);
const MAX_MS = arg('-max-ms', 3000);
const TIMEOUT_MS = arg('-timeout-ms', 120000);
const PAYLOAD = 'x'.repeat(64); // 64 bytes; on the wire, 66 of JSON and a newline

if (cluster.isPrimary) {
  primary();
} else {
  worker();
}

function primary() {
  const watchdog = setTimeout(() => {
    console.error(`ipc-node: timed out after ${TIMEOUT_MS} ms; killing the workers`);
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
    process.exit(2);
  }, TIMEOUT_MS);

  const fail = (msg) => {
    console.error('ipc-node:', msg);
    for (const w of Object.values(cluster.workers)) w.process.kill('SIGKILL');
    process.exit(1);
  };
  cluster.on('exit', (w, code, signal) => {
    if (!stopping) fail(`worker ${w.id} exited (code ${code}, signal ${signal})`);
  });

  let stopping = false;
  const workers = [cluster.fork(), cluster.fork()];
  let ready = 0;
  for (const w of workers) {
    w.once('message', (m) => {
      if (m !== 'ready') fail(`worker ${w.id}: unexpected first message ${JSON.stringify(m)}`);
      if (++ready === workers.length) roundTrip(workers[0]);
    });
  }

  const results = {};

  // cpu asks w for its CPU time (user + system, µs) and passes it to cb.
  function cpu(w, cb) {
    w.once('message', (m) => {
      if (!m || typeof m.cpu !== 'number') return fail(`cpu: unexpected message ${JSON.stringify(m)}`);
      cb(m.cpu);
    });
    w.send({ cmd: 'cpu' });
  }

  const cpuSelf = () => {
    const u = process.cpuUsage();
    return u.user + u.system;
  };

  // echoes sends n payloads to w one after the other, each once the echo of
  // the previous one is in (for at most 30 s), and passes the round trip
  // times (µs) to cb.
  function echoes(w, n, cb) {
    const samples = new Float64Array(n);
    let i = 0;
    let t = 0n;
    const start = Date.now();
    const onEcho = (m) => {
      const d = process.hrtime.bigint() - t;
      if (m !== PAYLOAD) return fail(`round trip ${i}: bad echo ${JSON.stringify(m)}`);
      samples[i++] = Number(d) / 1000;
      if (i < n && Date.now() - start < 30000) {
        t = process.hrtime.bigint();
        w.send(PAYLOAD);
        return;
      }
      w.off('message', onEcho);
      cb(samples.subarray(0, i));
    };
    w.on('message', onEcho);
    t = process.hrtime.bigint();
    w.send(PAYLOAD);
  }

  function roundTrip(w) {
    echoes(w, WARMUP, () => cpu(w, (wcpu0) => {
      const pcpu0 = cpuSelf();
      echoes(w, RT, (samples) => {
        const pcpu = cpuSelf() - pcpu0;
        cpu(w, (wcpu1) => {
          const n = samples.length;
          if (n === 0) return fail('round trip: no sample within 30 s');
          const s = Array.from(samples).sort((a, b) => a - b);
          const q = (f) => s[Math.min(n - 1, Math.floor(f * n))];
          const total = s.reduce((a, b) => a + b, 0);
          console.error(`roundtrip: ${n} samples: p50 ${q(0.5).toFixed(1)} us, p90 ${q(0.9).toFixed(1)} us, ` +
            `p99 ${q(0.99).toFixed(1)} us, max ${s[n - 1].toFixed(1)} us (${(n / (total / 1e6)).toFixed(0)} round trips/s)`);
          console.error(`roundtrip: per round trip: CPU time primary ${(pcpu / n).toFixed(1)} us, ` +
            `worker 1 ${((wcpu1 - wcpu0) / n).toFixed(1)} us`);
          results.rt = q(0.5);
          oneWay(w);
        });
      });
    }));
  }

  function oneWay(w) {
    let got = 0;
    const t0 = process.hrtime.bigint();
    const onMsg = (m) => {
      if (m === PAYLOAD) {
        got++;
        return;
      }
      if (m && m.end) {
        const secs = Number(process.hrtime.bigint() - t0) / 1e9;
        w.off('message', onMsg);
        const rate = got / secs;
        console.error(`one-way: worker 1 sent ${m.sent} in ${m.secs.toFixed(3)}s (timed out: ${m.timedOut}; ` +
          `send() returned false ${m.waits} times); primary received ${got} in ${secs.toFixed(3)}s: ${rate.toFixed(0)} msg/s`);
        if (got !== m.sent) return fail(`one-way: received ${got} of ${m.sent}`);
        results.oneway = rate;
        finish();
        return;
      }
      fail(`one-way: unexpected message ${JSON.stringify(m)}`);
    };
    w.on('message', onMsg);
    w.send({ cmd: 'flood', n: ONEWAY, maxMs: MAX_MS });
  }

  function finish() {
    process.stdout.write(`node-roundtrip-us ${results.rt.toFixed(1)}\n`);
    process.stdout.write(`node-oneway-msgs-per-s ${results.oneway.toFixed(0)}\n`);
    stopping = true;
    // Workers exit once their channel closes; the primary once they have.
    cluster.disconnect(() => clearTimeout(watchdog));
  }
}

function worker() {
  process.on('message', (m) => {
    if (typeof m === 'string') {
      process.send(m); // echo
      return;
    }
    if (m && m.cmd === 'flood') flood(m.n, m.maxMs);
    if (m && m.cmd === 'cpu') {
      const u = process.cpuUsage();
      process.send({ cpu: u.user + u.system });
    }
  });
  process.send('ready');

  function flood(n, maxMs) {
    const start = Date.now();
    const deadline = start + maxMs;
    let sent = 0;
    let written = 0; // sends whose callback has run: written to the channel
    let pausedAt = 0; // when paused, the send whose callback resumes the loop
    let waits = 0;
    let timedOut = false;
    // Callbacks run in the order of the sends, once each is written
    // (a synchronous write's on the next tick).
    const onWritten = () => {
      written++;
      if (pausedAt !== 0 && written >= pausedAt) {
        pausedAt = 0;
        pump();
      }
    };
    const pump = () => {
      while (sent < n) {
        if ((sent & 1023) === 0 && Date.now() > deadline) {
          timedOut = true;
          break;
        }
        sent++;
        // process.send returns false when the channel's write queue is past
        // Node's threshold: wait until this message is written.
        if (!process.send(PAYLOAD, onWritten)) {
          waits++;
          pausedAt = sent;
          return;
        }
      }
      process.send({ end: true, sent, waits, timedOut, secs: (Date.now() - start) / 1000 });
    };
    pump();
  }
}

// One graphile-worker process for rdev's queue benchmark (tests/benches/queue.rs), which
// starts it with the Node 22 and graphile-worker it installed from npm.
//
// Environment: GRAPHILE_WORKER_PREFIX (the npm prefix holding graphile-worker),
// DATABASE_URL, CONCURRENCY, REPORT=1 to print `claimed <job id> <epoch ms>` when a job
// starts (the latency run). Prints `ready` once the runner is up and stops when stdin closes,
// like the bench's rdev worker processes. The task does nothing, as rdev's bench work does.

import { createRequire } from "node:module";
import { join } from "node:path";

const require = createRequire(join(process.env.GRAPHILE_WORKER_PREFIX, "bench.js"));
const { run, Logger } = require("graphile-worker");

const report = process.env.REPORT === "1";
const runner = await run({
  connectionString: process.env.DATABASE_URL,
  concurrency: Number(process.env.CONCURRENCY),
  noHandleSignals: true,
  // Logging every job would cost graphile-worker more than rdev's silent workers pay.
  logger: new Logger(() => () => {}),
  taskList: {
    noop: async (payload) => {
      if (report) {
        const at = performance.timeOrigin + performance.now();
        process.stdout.write(`claimed ${payload.id} ${at}\n`);
      }
    },
  },
});
process.stdout.write("ready\n");
process.stdin.resume();
process.stdin.on("end", async () => {
  await runner.stop();
  process.exit(0);
});

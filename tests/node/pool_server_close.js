"use strict";
// A mysql2 pool whose idle connection the server ends: does the pool drop it before reuse?
//
//   node pool_server_close.js --mode kill|wait_timeout
//
// Env: HOOPY_HOST, HOOPY_PORT, HOOPY_USER, HOOPY_PASSWORD (the pool's endpoint: hoopy or the
// database itself); for --mode kill also DB_HOST, DB_PORT, DB_USER, DB_PASSWORD (a direct
// connection that KILLs the pooled one). mysql2's PoolConnection removes itself from the pool
// on its 'end' or 'error' event, which fires when the socket closes.
// Prints {"event": "end"|"<error code>"|null, "first": id, "second": id|null, "error": ...}.
const mysql = require("mysql2");

function option(name) {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && i + 1 < process.argv.length ? process.argv[i + 1] : undefined;
}

// Generous: hoopy relays the close at once; this only bounds a failing run.
const EVENT_TIMEOUT_MS = 15000;

function query(conn, sql) {
  return new Promise((resolve, reject) =>
    conn.query(sql, (err, rows) => (err ? reject(err) : resolve(rows)))
  );
}

async function main() {
  const mode = option("mode") || "kill";
  const env = process.env;
  const pool = mysql.createPool({
    host: env.HOOPY_HOST,
    port: Number(env.HOOPY_PORT),
    user: env.HOOPY_USER,
    password: env.HOOPY_PASSWORD,
    connectionLimit: 1,
  });
  const out = { event: null, first: null, second: null, error: null };
  try {
    const conn = await new Promise((resolve, reject) =>
      pool.getConnection((err, c) => (err ? reject(err) : resolve(c)))
    );
    out.first = (await query(conn, "SELECT CONNECTION_ID() AS id"))[0].id;
    const gone = new Promise((resolve) => {
      conn.once("end", () => resolve("end"));
      conn.once("error", (err) => resolve(err.code || String(err)));
      setTimeout(() => resolve(null), EVENT_TIMEOUT_MS);
    });
    if (mode === "wait_timeout") await query(conn, "SET SESSION wait_timeout = 1");
    conn.release(); // idle in the pool now
    if (mode === "kill") {
      const admin = mysql.createConnection({
        host: env.DB_HOST,
        port: Number(env.DB_PORT),
        user: env.DB_USER,
        password: env.DB_PASSWORD,
      });
      await query(admin, `KILL ${Number(out.first)}`);
      admin.end();
    }
    out.event = await gone;
    // The pool must hand out a live connection now, not the dead one.
    out.second = (await query(pool, "SELECT CONNECTION_ID() AS id"))[0].id;
  } catch (err) {
    out.error = { code: err.code || null, errno: err.errno || null, message: err.message };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
  pool.end(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}

main();

"use strict";
// Drive mysql2 with `compress: true` and print what it saw as JSON (tests/gateway/test_compression.py).
//
//   node compress.js --host 127.0.0.1 --port 3307 --user dev --password dev-pw --database db
//
// Prints {"ok":true,"compressed":true,"results":[...]} and exits 0, or {"ok":false,...}.
// Results: a small query, a result of more than 16 MiB in many rows (compressed frames
// carrying many packets), one value of 20 MiB (a packet spread over several frames), a
// prepared statement executed twice, and an error.
const crypto = require("crypto");
const mysql = require("mysql2/promise");

function option(name) {
  const i = process.argv.indexOf(`--${name}`);
  return i !== -1 && i + 1 < process.argv.length ? process.argv[i + 1] : undefined;
}

function digest(rows) {
  const h = crypto.createHash("sha256");
  for (const row of rows) h.update(JSON.stringify(row));
  return h.digest("hex");
}

async function main() {
  const conn = await mysql.createConnection({
    host: option("host"),
    port: Number(option("port")),
    user: option("user"),
    password: option("password"),
    database: option("database"),
    compress: true,
    supportBigNumbers: true,
    bigNumberStrings: true,
    dateStrings: true,
  });
  const results = [];
  try {
    // mysql2 keeps compression on only if the server's greeting offered it.
    const compressed = Boolean(conn.connection.config.compress);
    const [small] = await conn.query({ sql: "SELECT 6*7 AS answer, 'x' AS s", rowsAsArray: true });
    results.push(small);
    const [many] = await conn.query({
      sql: "SELECT seq, REPEAT(CHAR(65 + seq % 26), 1000) AS v FROM seq_1_to_20000",
      rowsAsArray: true,
    });
    results.push([many.length, digest(many)]);
    const [big] = await conn.query({ sql: "SELECT REPEAT('ab', 10485760) AS v", rowsAsArray: true });
    results.push([big[0][0].length, digest(big)]);
    for (const n of [3, 700]) {
      const [rows] = await conn.execute("SELECT ? + 1 AS n, REPEAT('z', ?) AS v", [n, n]);
      results.push(rows);
    }
    try {
      await conn.query("SELECT * FROM missing_table");
    } catch (err) {
      results.push([err.errno, err.sqlState, err.sqlMessage]);
    }
    console.log(JSON.stringify({ ok: true, compressed, results }));
  } finally {
    await conn.end().catch(() => {});
  }
}

main().catch((err) => {
  console.log(JSON.stringify({
    ok: false, code: err.code, errno: err.errno, message: err.sqlMessage || err.message,
  }));
  process.exitCode = 1;
});

"use strict";
// Log into hoopy with a token as the password using mysql2, run SELECT 6*7, print JSON.
//
//   HOOPY_TOKEN=... node token_login.js --host 127.0.0.1 --port 3307 --ca hoopy-cert.pem
//   HOOPY_TOKEN=... node token_login.js --socket /path/to/hoopy.sock
//
// Options (argv wins over env): --host/HOOPY_HOST, --port/HOOPY_PORT, --socket/HOOPY_SOCKET,
// --ca/HOOPY_CA (PEM file; enables TLS and verifies hoopy's certificate and host name),
// --user/HOOPY_USER, --token/HOOPY_TOKEN (prefer the env var: argv is visible in ps).
// Prints {"ok":true,"answer":42} and exits 0, or {"ok":false,...error} and exits 1.
const fs = require("fs");
const mysql = require("mysql2/promise");

function option(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i !== -1 && i + 1 < process.argv.length) return process.argv[i + 1];
  return process.env[`HOOPY_${name.toUpperCase()}`];
}

async function main() {
  const config = { user: option("user") || "agent", password: option("token") || "" };
  const socket = option("socket");
  if (socket) {
    config.socketPath = socket;
  } else {
    config.host = option("host") || "127.0.0.1";
    config.port = Number(option("port") || 3307);
  }
  const ca = option("ca");
  if (ca) config.ssl = { ca: fs.readFileSync(ca) };
  let conn;
  try {
    conn = await mysql.createConnection(config);
    const [rows] = await conn.query({ sql: "SELECT 6*7 AS answer", rowsAsArray: true });
    console.log(JSON.stringify({ ok: true, answer: Number(rows[0][0]) }));
  } catch (err) {
    console.log(JSON.stringify({
      ok: false, code: err.code, errno: err.errno, sqlState: err.sqlState,
      message: err.sqlMessage || err.message,
    }));
    process.exitCode = 1;
  } finally {
    if (conn) await conn.end().catch(() => {});
  }
}

main();

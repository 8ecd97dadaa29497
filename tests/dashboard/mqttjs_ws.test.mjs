// MQTT.js in headless Chromium over WebSocket: a page served on 127.0.0.1 by this test loads
// MQTT.js (the npm package's browser bundle), connects to tern's ws listener, subscribes,
// publishes, and shows what it receives; a message from a TCP client (`tern pub`) must show up
// too. The test reads the page.
//
// Run: node --test tests/dashboard/   (scripts/test does).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const TERN = process.env.TERN_BIN || join(repo, "target", "debug", "tern");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const WAIT = 15000;

const children = [];
process.on("exit", () => children.forEach((c) => c.exitCode === null && c.kill("SIGKILL")));

// Starts tern with a TCP and a WebSocket listener; their addresses come from its JSON log.
async function startBroker() {
  const dataDir = mkdtempSync(join(tmpdir(), "tern-ws-"));
  const broker = spawn(TERN, [
    "serve", "--listen", "127.0.0.1:0", "--ws-listen", "127.0.0.1:0", "--admin-listen", "off",
    "--log-format", "json", "--durability", "none", "--data-dir", dataDir,
  ], { stdio: ["ignore", "ignore", "pipe"] });
  children.push(broker);
  const log = [];
  return await new Promise((ok, fail) => {
    const addrs = {};
    const timer = setTimeout(() => fail(new Error("listeners not logged:\n" + log.join("\n"))), WAIT);
    createInterface({ input: broker.stderr }).on("line", (line) => {
      log.push(line);
      let v;
      try { v = JSON.parse(line); } catch { return; }
      if (!(v.fields?.message || "").includes("listening for MQTT")) return;
      if (v.fields.transport === "ws") addrs.ws = v.fields.addr; else addrs.tcp = v.fields.addr;
      if (addrs.ws && addrs.tcp) { clearTimeout(timer); ok(addrs); }
    });
    broker.on("exit", (code) => fail(new Error(`broker exited (${code}):\n` + log.join("\n"))));
  });
}

const PAGE = (ws) => `<!doctype html><meta charset="utf-8"><title>tern ws</title>
<script src="/mqtt.min.js"></script>
<pre id="state">connecting</pre><pre id="out"></pre>
<script>
  const client = mqtt.connect("ws://${ws}/mqtt", { clientId: "browser-" + Math.random().toString(16).slice(2), protocolVersion: 5 });
  client.on("connect", () => {
    document.getElementById("state").textContent = "connected";
    client.subscribe("browser/#", { qos: 1 }, (err) => {
      if (err) { document.getElementById("state").textContent = "subscribe failed: " + err; return; }
      document.getElementById("state").textContent = "subscribed";
      client.publish("browser/hello", "hello from the browser", { qos: 1 });
    });
  });
  client.on("message", (topic, payload) => {
    document.getElementById("out").textContent += topic + " " + payload.toString() + "\\n";
  });
  client.on("error", (e) => { document.getElementById("state").textContent = "error: " + e.message; });
</script>`;

test("MQTT.js in Chromium talks to tern over WebSocket", { timeout: 90000 }, async () => {
  const { ws, tcp } = await startBroker();
  const bundle = readFileSync(join(here, "node_modules", "mqtt", "dist", "mqtt.min.js"));
  const server = createServer((req, res) => {
    if (req.url === "/mqtt.min.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      res.end(bundle);
    } else {
      res.writeHead(200, { "content-type": "text/html" });
      res.end(PAGE(ws));
    }
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`http://127.0.0.1:${server.address().port}/`);
    // The browser's own message comes back through the broker.
    await page.waitForFunction(() => document.getElementById("out").textContent.includes("browser/hello hello from the browser"), null, { timeout: WAIT });
    assert.equal(await page.locator("#state").innerText(), "subscribed");
    // A message from a plain TCP client reaches the browser.
    const [host, port] = [tcp.slice(0, tcp.lastIndexOf(":")), tcp.slice(tcp.lastIndexOf(":") + 1)];
    const r = spawnSync(TERN, ["pub", "-h", host, "-p", port, "-t", "browser/tcp", "-m", "from tcp", "-q", "1"], { encoding: "utf8", timeout: WAIT });
    assert.equal(r.status, 0, r.stderr);
    await page.waitForFunction(() => document.getElementById("out").textContent.includes("browser/tcp from tcp"), null, { timeout: WAIT });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    server.close();
    // The broker's log pipe would keep this test process alive.
    children.forEach((c) => c.exitCode === null && c.kill("SIGKILL"));
  }
});

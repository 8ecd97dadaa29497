// The admin dashboard in headless Chromium against a running broker with traffic.
//
// Starts `tern serve` (TERN_BIN, default target/debug/tern) on ephemeral loopback ports with an
// admin token, makes traffic with `tern sub` / `tern pub` (a live subscriber, a publisher sending
// a message every 20 ms, retained messages, an offline persistent session), opens the dashboard
// with the token in the URL fragment and checks what it shows: the live connection count, a
// non-zero message rate in the chart, the clients, sessions and subscriptions tables, and the
// retained topic tree (expanding it and reading a message). Keeps a screenshot in
// test-output/dashboard.png.
//
// Run: node --test tests/dashboard/   (scripts/test does, after installing chromium and
// playwright-core when missing).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const TERN = process.env.TERN_BIN || join(repo, "target", "debug", "tern");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const OUT = join(repo, "test-output");
const TOKEN = "dashboard-test-token";
const WAIT = 15000;

const children = [];
function start(args, opts = {}) {
  const child = spawn(TERN, args, { stdio: ["pipe", "ignore", "pipe"], ...opts });
  children.push(child);
  return child;
}
function stopAll() {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
}
process.on("exit", stopAll);

// Starts the broker and reads its MQTT and admin addresses from its JSON log.
async function startBroker(dataDir) {
  const broker = start([
    "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
    "--admin-token", TOKEN, "--log-format", "json", "--sys-interval", "1",
    "--durability", "none", "--data-dir", dataDir,
  ]);
  const log = [];
  const lines = createInterface({ input: broker.stderr });
  return await new Promise((ok, fail) => {
    const addrs = {};
    const timer = setTimeout(() => fail(new Error("broker addresses not logged:\n" + log.join("\n"))), WAIT);
    lines.on("line", (line) => {
      log.push(line);
      let v;
      try { v = JSON.parse(line); } catch { return; }
      const msg = v.fields?.message || "";
      if (msg.includes("listening for MQTT")) addrs.mqtt = v.fields.addr;
      if (msg.includes("admin listener")) addrs.admin = v.fields.addr;
      if (addrs.mqtt && addrs.admin) { clearTimeout(timer); ok({ broker, ...addrs, log }); }
    });
    broker.on("exit", (code) => fail(new Error(`broker exited (${code}):\n` + log.join("\n"))));
  });
}

function run(args) {
  const r = spawnSync(TERN, args, { encoding: "utf8", timeout: WAIT });
  assert.equal(r.status, 0, `tern ${args.join(" ")}: ${r.stderr}`);
}

test("dashboard shows a running broker with traffic", { timeout: 120000 }, async () => {
  mkdirSync(OUT, { recursive: true });
  const dataDir = mkdtempSync(join(tmpdir(), "tern-dash-"));
  const { mqtt, admin } = await startBroker(dataDir);
  const [host, port] = [mqtt.slice(0, mqtt.lastIndexOf(":")), mqtt.slice(mqtt.lastIndexOf(":") + 1)];
  const common = ["-h", host, "-p", port];

  // Retained messages for the topic tree.
  run(["pub", ...common, "-t", "home/kitchen/temp", "-m", "21.5", "-r", "-q", "1"]);
  run(["pub", ...common, "-t", "home/hall/light", "-m", "on", "-r"]);
  run(["pub", ...common, "-t", "office/printer/status", "-m", "idle", "-r"]);
  // An offline persistent session with a subscription.
  run(["sub", ...common, "-i", "offline-worker", "-c", "-q", "1", "-t", "jobs/#", "-E"]);
  // A live subscriber (MQTT 5) and a publisher sending a message every 20 ms.
  start(["sub", ...common, "-V", "5", "-i", "dash-sub", "-q", "1", "-t", "demo/#"]);
  const publisher = start(["pub", ...common, "-i", "dash-pub", "-t", "demo/rate", "-l", "-q", "1"]);
  let n = 0;
  const feeder = setInterval(() => publisher.stdin.write(`message ${n++}\n`), 20);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      // Playwright starts Chromium with a fresh, empty --user-data-dir of its own.
    ],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(`http://${admin}/dashboard#token=${TOKEN}`);

    await page.waitForFunction(() => document.body.dataset.loaded === "1", null, { timeout: WAIT });
    await page.waitForFunction(() => document.getElementById("status").textContent === "live", null, { timeout: WAIT });
    // Two live clients: dash-sub and dash-pub.
    await page.waitForFunction(() => document.getElementById("connected").textContent === "2", null, { timeout: WAIT });
    const clients = await page.locator("#clients tbody").innerText();
    assert.match(clients, /dash-sub/);
    assert.match(clients, /dash-pub/);
    assert.match(clients, /127\.0\.0\.1:\d+/, "client addresses are shown");
    assert.match(clients, /5\.0/);

    const sessions = await page.locator("#sessions tbody").innerText();
    assert.match(sessions, /offline-worker\s+offline/);
    assert.match(sessions, /dash-sub\s+online/);
    assert.equal(await page.locator("#sessions-count").innerText(), "3");

    const subs = await page.locator("#subs tbody").innerText();
    assert.match(subs, /dash-sub\s+demo\/#\s+1/);
    assert.match(subs, /offline-worker\s+jobs\/#/);

    // The chart has rate points and a non-zero message rate (a message every 20 ms).
    await page.waitForFunction(() => {
      const c = document.getElementById("chart");
      return Number(c.dataset.points) >= 3 && Number(c.dataset.maxRate) > 5;
    }, null, { timeout: WAIT });
    await page.waitForFunction(() => Number(document.getElementById("rate-in").textContent) > 5, null, { timeout: WAIT });

    // The retained tree: home (2) > kitchen > temp = 21.5; $SYS is there too.
    const tree = page.locator("#tree");
    await tree.locator('li[data-topic="home"]').waitFor({ timeout: WAIT });
    assert.match(await tree.locator('li[data-topic="home"] > .node').innerText(), /home \(2\)/);
    assert.equal(await tree.locator('li[data-topic="$SYS"]').count(), 1);
    await tree.locator('li[data-topic="home"] > .node').click();
    await tree.locator('li[data-topic="home/kitchen"] > .node').click();
    await tree.locator('li[data-topic="home/kitchen/temp"] > .node').click();
    await page.waitForFunction(() => document.getElementById("retained-view").dataset.topic === "home/kitchen/temp", null, { timeout: WAIT });
    const shown = await page.locator("#retained-view").innerText();
    assert.match(shown, /21\.5/);
    assert.match(shown, /qos: 1/);
    await tree.locator('li[data-topic="$SYS"] > .node').click();
    await tree.locator('li[data-topic="$SYS/broker"] > .node').click();

    await page.screenshot({ path: join(OUT, "dashboard.png"), fullPage: true });
    assert.deepEqual(errors, [], "no script errors on the page");

    // Without the token the page asks for one.
    const anon = await browser.newPage();
    await anon.goto(`http://${admin}/dashboard`);
    await anon.locator("#tokenbar.show").waitFor({ timeout: WAIT });
  } finally {
    clearInterval(feeder);
    await browser.close();
    stopAll();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

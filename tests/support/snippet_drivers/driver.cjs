
// ---- the test's driver, appended to README's verify-node snippet (tests/integration/test_readme_snippets.py) ----
// stdin: one JSON case per line {"scheme", "secret", "headers", "body" (base64)}; stdout: "true" or "false" each.
const lines = require("node:readline").createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on("line", (line) => {
  if (line.trim() === "") return;
  const c = JSON.parse(line);
  const headers = Object.fromEntries(Object.entries(c.headers).map(([k, v]) => [k.toLowerCase(), v]));
  let verdict;
  try {
    verdict = String(fromRelay(c.secret, headers, Buffer.from(c.body, "base64"), c.scheme));
  } catch (err) {
    verdict = `error: ${String(err && err.message ? err.message : err).replace(/\s+/g, " ")}`;
  }
  process.stdout.write(verdict + "\n");
});

// Runs ConsentProof's published verifyWebhookSignature (seed 001_3865bfd2ca447d0c.txt, "verify-webhook.js")
// exactly as a ConsentProof customer would paste it, against signatures relay produced.
// Input: one JSON object {"payload": string, "signature": string, "secret": string} per stdin line.
// Output: one line per input line: "true", "false", or "error: MESSAGE" when the function throws
// (crypto.timingSafeEqual throws on a length mismatch, which an Express handler turns into a 500).

// ---- verbatim from the seed, unchanged ----
import crypto from 'crypto';

function verifyWebhookSignature(payload, signature, secret) {
  const expectedSignature = crypto
    .createHmac('sha256', secret)
    .update(payload)
    .digest('hex');

  return crypto.timingSafeEqual(
    Buffer.from(signature),
    Buffer.from(expectedSignature)
  );
}
// ---- end of the seed's code ----

import readline from 'readline';

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === '') continue;
  let verdict;
  try {
    const { payload, signature, secret } = JSON.parse(line);
    verdict = String(verifyWebhookSignature(payload, signature, secret));
  } catch (err) {
    verdict = `error: ${String(err && err.message ? err.message : err).replace(/\s+/g, ' ')}`;
  }
  process.stdout.write(verdict + '\n');
}

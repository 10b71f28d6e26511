// An independent Sparkplug B codec for the tests: npm's sparkplug-payload (protobufjs),
// not the protobuf library floorlink uses. Decodes: reads one base64 payload per line on
// stdin and writes one JSON line per payload. With --encode: reads one JSON payload per
// line (sparkplug-payload's own object form) and writes its base64 encoding. 64-bit integers (long.js) are written as
// decimal strings, and NaN and the infinities as strings, so that nothing is rounded or
// lost on the way through JSON.
"use strict";
const readline = require("node:readline");
const sparkplug = require("sparkplug-payload").get("spBv1.0");

function plain(value) {
  if (value === null || value === undefined) return value ?? null;
  if (typeof value === "object" && typeof value.toString === "function" && "low" in value && "high" in value) {
    return value.toString();  // a long.js Long, signed or unsigned as the decoder made it
  }
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  if (Object.is(value, -0)) return "-0";  // JSON would write 0
  if (value instanceof Uint8Array) return { bytes: Buffer.from(value).toString("base64") };
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value === "object") {
    const out = {};
    for (const [key, inner] of Object.entries(value)) out[key] = plain(inner);
    return out;
  }
  return value;
}

const encoding = process.argv.includes("--encode");
const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  try {
    if (encoding) {
      const encoded = sparkplug.encodePayload(JSON.parse(line));
      process.stdout.write(Buffer.from(encoded).toString("base64") + "\n");
      return;
    }
    const decoded = sparkplug.decodePayload(Buffer.from(line, "base64"));
    process.stdout.write(JSON.stringify(plain(decoded)) + "\n");
  } catch (error) {
    process.stdout.write(JSON.stringify({ error: String(error) }) + "\n");
  }
});

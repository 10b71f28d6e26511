"use strict";
// An OPC UA server by node-opcua: a PLC whose stack nobody in this project wrote.
// Usage: node opcua-peer.cjs PORT PKI_DIR. Prints "ready" once it listens; then takes one
// JSON line per write on stdin ({"name", "type", "value", "status"}) and answers "ok".
// It ends when stdin closes. node-opcua logs on stdout too: readers look for the words.
const path = require("path");
const { OPCUAServer } = require("node-opcua-server");
const { OPCUACertificateManager } = require("node-opcua-certificate-manager");
const { Variant, DataType, VariantArrayType } = require("node-opcua-variant");
const { DataValue } = require("node-opcua-data-value");
const { StatusCodes } = require("node-opcua-status-code");

async function main() {
  const port = Number(process.argv[2]);
  const pki = process.argv[3];
  const serverCertificateManager = new OPCUACertificateManager({ rootFolder: path.join(pki, "server") });
  const server = new OPCUAServer({ port, resourcePath: "/plc", serverCertificateManager,
    buildInfo: { productName: "peer" } });
  await server.initialize();
  const space = server.engine.addressSpace;
  const ns = space.registerNamespace("urn:test:line");
  const press = ns.addObject({ organizedBy: space.rootFolder.objects, browseName: "Press1",
                               nodeId: "s=Press1" });
  const vars = {};
  // `dataType` is the node's; `valueType` the first value's (they differ for BaseDataType).
  function add(name, dataType, value, valueType = dataType) {
    vars[name] = ns.addVariable({ componentOf: press, browseName: name, nodeId: `s=Press1.${name}`,
      dataType, value: new Variant({ dataType: DataType[valueType],
                                     arrayType: VariantArrayType.Scalar, value }) });
  }
  add("Good", "UInt32", 100);
  add("State", "Int32", 1);
  add("Speed", "Double", 12.5);
  add("Temp", "Float", 21.5);
  add("Running", "Boolean", true);
  add("Order", "String", "WO-1");
  add("Since", "DateTime", new Date(Date.UTC(2026, 10, 23, 6, 0, 0)));
  add("Small", "Int16", -3);
  add("Big", "UInt64", [256, 0]);   // 2^40 as [high, low]
  add("Nan", "Double", NaN);
  add("Inf", "Double", Infinity);
  add("Huge", "String", "x".repeat(1_000_000));
  add("Bytes", "ByteString", Buffer.from([0xde, 0xad, 0xbe, 0xef]));
  add("Shifty", "BaseDataType", 5, "Int32");  // its type is whatever the value says
  await server.start();
  process.stdout.write("ready\n");
  // Commands, one JSON line each: {"name", "type", "value", "status"}
  let buffered = "";
  process.stdin.on("data", (chunk) => {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl); buffered = buffered.slice(nl + 1);
      const c = JSON.parse(line);
      const status = c.status ? StatusCodes[c.status] : StatusCodes.Good;
      const now = new Date();
      try {
        vars[c.name].setValueFromSource(new Variant({ dataType: DataType[c.type],
                                                      arrayType: VariantArrayType.Scalar,
                                                      value: c.value }), status, now);
        process.stdout.write("ok\n");
      } catch (e) {
        process.stdout.write("refused\n");  // the write is the test's mistake, not the PLC's
      }
    }
  });
  process.stdin.on("end", async () => { await server.shutdown(0); process.exit(0); });
}
main().catch((e) => { process.stderr.write(String(e.stack || e) + "\n"); process.exit(1); });

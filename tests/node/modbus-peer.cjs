"use strict";
// A Modbus TCP server by modbus-serial: a PLC whose stack nobody in this project wrote.
// Usage: node modbus-peer.cjs PORT. Prints "ready" once it listens; then takes one JSON
// line per write on stdin ({"table": "holding"|"input"|"coil"|"discrete", "address",
// "values": [...]}) and answers "ok". Addresses from LIMIT up answer exception 2
// (illegal data address), as a PLC does for registers it does not have.
const ModbusRTU = require("modbus-serial");

const LIMIT = 200;
const tables = { holding: new Array(LIMIT).fill(0), input: new Array(LIMIT).fill(0),
                 coil: new Array(LIMIT).fill(false), discrete: new Array(LIMIT).fill(false) };

function read(table, address, length = 1) {
  if (address + length > LIMIT) {
    throw { modbusErrorCode: 0x02, msg: "Illegal data address" };
  }
  return tables[table].slice(address, address + length);
}

const vector = {
  getHoldingRegister: (address) => read("holding", address)[0],
  getMultipleHoldingRegisters: (address, length) => read("holding", address, length),
  getInputRegister: (address) => read("input", address)[0],
  getMultipleInputRegisters: (address, length) => read("input", address, length),
  getCoil: (address) => read("coil", address)[0],
  getDiscreteInput: (address) => read("discrete", address)[0],
  setRegister: () => { throw { modbusErrorCode: 0x01, msg: "floorlink never writes" }; },
  setCoil: () => { throw { modbusErrorCode: 0x01, msg: "floorlink never writes" }; },
};

const port = Number(process.argv[2]);
const server = new ModbusRTU.ServerTCP(vector, { host: "127.0.0.1", port, unitID: 1 });
server.on("socketError", (err) => process.stderr.write(`socket error: ${err}\n`));
server.on("initialized", () => process.stdout.write("ready\n"));

let buffered = "";
process.stdin.on("data", (chunk) => {
  buffered += chunk;
  let nl;
  while ((nl = buffered.indexOf("\n")) >= 0) {
    const line = buffered.slice(0, nl);
    buffered = buffered.slice(nl + 1);
    const c = JSON.parse(line);
    c.values.forEach((value, i) => { tables[c.table][c.address + i] = value; });
    process.stdout.write("ok\n");
  }
});
process.stdin.on("end", () => server.close(() => process.exit(0)));

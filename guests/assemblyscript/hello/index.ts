// hello: operation main answers "Hello, <payload>!" ("Hello, World!" for an empty payload);
// operation log sends the payload to the host's log (consoleLog) and answers "logged".
import { consoleLog, register, Result } from "../guest";
export { __guest_call } from "../guest";

const PREFIX = String.UTF8.encode("Hello, ");
const WORLD = String.UTF8.encode("World");

// Works on bytes, so any payload (UTF-8 or not) comes back as it was sent.
function hello(payload: ArrayBuffer): Result {
  const name = payload.byteLength == 0 ? WORLD : payload;
  const out = new Uint8Array(PREFIX.byteLength + name.byteLength + 1);
  out.set(Uint8Array.wrap(PREFIX), 0);
  out.set(Uint8Array.wrap(name), PREFIX.byteLength);
  out[out.length - 1] = 0x21; // '!'
  return Result.ok(out.buffer);
}

function log(payload: ArrayBuffer): Result {
  consoleLog(String.UTF8.decode(payload));
  return Result.text("logged");
}

register("main", hello);
register("log", log);

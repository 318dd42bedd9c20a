// A waPC guest written against the waPC authors' own AssemblyScript SDK (@wapc/as-guest 0.3.1,
// compiled with the AssemblyScript 0.20.13 it names), not Assemblex's SDK in ../guest: it checks
// that such a guest runs on Assemblex unchanged. Operations:
//   main    "Hello, <payload>!" ("Hello, World!" for an empty payload), on bytes
//   echo    the payload as it came
//   log     sends the payload to the host's log (consoleLog), answers "logged"
//   host    one host call: payload "<binding>\n<namespace>\n<operation>\n<payload>" (the last
//           part may hold any bytes); answers the host's response, or fails with its error text
//   fail    a handler error: Result.error with the payload as the message
//   assert  a failed AssemblyScript assert(), which ends in abort()
//
// The entry file must export __guest_call and, for the SDK's documented build
// (`--use abort=index/abort`), define abort; scripts/build-guests also builds it without that
// flag, where the module imports env.abort instead.
import { handleAbort, handleCall, hostCall, consoleLog, register, Result } from "@wapc/as-guest";

const NEWLINE: u8 = 0x0a;
const PREFIX = String.UTF8.encode("Hello, ");
const WORLD = String.UTF8.encode("World");

function hello(payload: ArrayBuffer): Result<ArrayBuffer> {
  const name = payload.byteLength == 0 ? WORLD : payload;
  const out = new Uint8Array(PREFIX.byteLength + name.byteLength + 1);
  out.set(Uint8Array.wrap(PREFIX), 0);
  out.set(Uint8Array.wrap(name), PREFIX.byteLength);
  out[out.length - 1] = 0x21; // '!'
  return Result.ok(out.buffer);
}

function echo(payload: ArrayBuffer): Result<ArrayBuffer> {
  return Result.ok(payload);
}

function log(payload: ArrayBuffer): Result<ArrayBuffer> {
  consoleLog(String.UTF8.decode(payload));
  return Result.ok(String.UTF8.encode("logged"));
}

// Splits at the first three newlines: binding, namespace and operation are text, the rest is
// the host call's payload as bytes.
function host(payload: ArrayBuffer): Result<ArrayBuffer> {
  const bytes = Uint8Array.wrap(payload);
  const parts = new Array<string>();
  let start = 0;
  for (let i = 0; i < bytes.length && parts.length < 3; i++) {
    if (bytes[i] == NEWLINE) {
      parts.push(String.UTF8.decode(payload.slice(start, i)));
      start = i + 1;
    }
  }
  if (parts.length < 3) {
    return Result.error<ArrayBuffer>(new Error("host expects binding\\nnamespace\\noperation\\npayload"));
  }
  // A failed host call is a Result holding the SDK's HostError: returned as it is, its
  // message (the host's error text) becomes this call's error.
  return hostCall(parts[0], parts[1], parts[2], payload.slice(start));
}

function fail(payload: ArrayBuffer): Result<ArrayBuffer> {
  return Result.error<ArrayBuffer>(new Error(String.UTF8.decode(payload)));
}

function failedAssert(payload: ArrayBuffer): Result<ArrayBuffer> {
  assert(payload.byteLength == 42, "the payload must be 42 bytes long");
  return Result.ok(payload);
}

register("main", hello);
register("echo", echo);
register("log", log);
register("host", host);
register("fail", fail);
register("assert", failedAssert);

// This must be present in the entry file (as the SDK's README says).
export function __guest_call(operation_size: usize, payload_size: usize): bool {
  return handleCall(operation_size, payload_size);
}

function abort(message: string | null, fileName: string | null, lineNumber: u32, columnNumber: u32): void {
  handleAbort(message, fileName, lineNumber, columnNumber);
}

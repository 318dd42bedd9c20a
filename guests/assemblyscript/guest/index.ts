// A minimal waPC guest SDK for Assemblex, in AssemblyScript (no dependency but the compiler).
//
//   import { register, Result } from "../guest";
//   export { __guest_call } from "../guest";
//
//   register("main", (payload: ArrayBuffer): Result => Result.ok(payload));
//
// Top-level statements run when the module is instantiated (the wasm start function), so
// handlers are registered before the first call. __guest_call dispatches to the handler
// registered for the operation; a Result.err reaches the host through __guest_error; an
// operation with no handler is the error "unknown operation: <op>".
//
// Build with `--runtime incremental --use abort=guest/index/abort` (see scripts/build-guests):
// the abort below reports through __guest_error and traps, so an assertion or an out-of-bounds
// access is a readable guest error instead of an `env.abort` import the host does not offer.

@external("wapc", "__guest_request")
declare function __guest_request(op_ptr: usize, ptr: usize): void;
@external("wapc", "__guest_response")
declare function __guest_response(ptr: usize, len: usize): void;
@external("wapc", "__guest_error")
declare function __guest_error(ptr: usize, len: usize): void;
@external("wapc", "__host_call")
declare function __host_call(
  bd_ptr: usize, bd_len: usize,
  ns_ptr: usize, ns_len: usize,
  op_ptr: usize, op_len: usize,
  ptr: usize, len: usize,
): u32;
@external("wapc", "__host_response_len")
declare function __host_response_len(): usize;
@external("wapc", "__host_response")
declare function __host_response(ptr: usize): void;
@external("wapc", "__host_error_len")
declare function __host_error_len(): usize;
@external("wapc", "__host_error")
declare function __host_error(ptr: usize): void;
@external("wapc", "__console_log")
declare function __console_log(ptr: usize, len: usize): void;

/** What a handler or a host call gives back: data, or an error text. */
export class Result {
  constructor(public data: ArrayBuffer, public error: string | null) {}

  static ok(data: ArrayBuffer): Result {
    return new Result(data, null);
  }

  /** A response given as a string, sent as UTF-8. */
  static text(text: string): Result {
    return new Result(String.UTF8.encode(text), null);
  }

  static err(message: string): Result {
    return new Result(new ArrayBuffer(0), message);
  }

  get isOk(): bool {
    return this.error === null;
  }
}

/** A handler gets the request payload. */
export type Handler = (payload: ArrayBuffer) => Result;

const handlers = new Map<string, Handler>();

/** Registers `handler` for operation `op` (a later registration replaces an earlier one). */
export function register(op: string, handler: Handler): void {
  handlers.set(op, handler);
}

/** Calls the host: `namespace`/`operation` on `binding` with `payload`. */
export function hostCall(binding: string, namespace: string, operation: string, payload: ArrayBuffer): Result {
  const bd = String.UTF8.encode(binding);
  const ns = String.UTF8.encode(namespace);
  const op = String.UTF8.encode(operation);
  const ok = __host_call(
    changetype<usize>(bd), bd.byteLength,
    changetype<usize>(ns), ns.byteLength,
    changetype<usize>(op), op.byteLength,
    changetype<usize>(payload), payload.byteLength,
  );
  if (ok == 1) {
    const response = new ArrayBuffer(<i32>__host_response_len());
    __host_response(changetype<usize>(response));
    return Result.ok(response);
  }
  const error = new ArrayBuffer(<i32>__host_error_len());
  __host_error(changetype<usize>(error));
  return Result.err(String.UTF8.decode(error));
}

// The actor namespace (binding ""): the state, key and alarm of the actor being called.
// Outside an actor call each of these fails with the host's error text.

/** The key of the actor being called (UTF-8 in `data`). */
export function actorKey(): Result {
  return hostCall("", "actor", "key", new ArrayBuffer(0));
}

/** The actor's stored state (empty if it has none). */
export function actorLoad(): Result {
  return hostCall("", "actor", "load", new ArrayBuffer(0));
}

/** Replaces the actor's stored state; returns once the host has made it durable. */
export function actorStore(state: ArrayBuffer): Result {
  return hostCall("", "actor", "store", state);
}

/** Schedules one call of the actor's operation `alarm` (empty payload) in `ms` milliseconds,
 *  replacing any pending alarm. */
export function actorAlarm(ms: u64): Result {
  return hostCall("", "actor", "alarm", String.UTF8.encode(ms.toString()));
}

/** Drops the actor's pending alarm. */
export function actorCancel(): Result {
  return hostCall("", "actor", "cancel", new ArrayBuffer(0));
}

/** Sends one log line to the host. */
export function consoleLog(message: string): void {
  const buf = String.UTF8.encode(message);
  __console_log(changetype<usize>(buf), buf.byteLength);
}

function sendError(message: string): void {
  const buf = String.UTF8.encode(message);
  __guest_error(changetype<usize>(buf), buf.byteLength);
}

/** The waPC entry point; re-export it from the example's entry file. */
export function __guest_call(op_len: usize, msg_len: usize): u32 {
  const opBuf = new ArrayBuffer(<i32>op_len);
  const payload = new ArrayBuffer(<i32>msg_len);
  __guest_request(changetype<usize>(opBuf), changetype<usize>(payload));
  const op = String.UTF8.decode(opBuf);
  if (!handlers.has(op)) {
    sendError("unknown operation: " + op);
    return 0;
  }
  const result = handlers.get(op)(payload);
  const error = result.error;
  if (error !== null) {
    sendError(error);
    return 0;
  }
  __guest_response(changetype<usize>(result.data), result.data.byteLength);
  return 1;
}

/** Replaces AssemblyScript's env.abort: reports through __guest_error, then traps. */
export function abort(message: string | null, fileName: string | null, line: u32, column: u32): void {
  let text = "abort: " + (message !== null ? message : "(no message)");
  if (fileName !== null) {
    text += " at " + fileName + ":" + line.toString() + ":" + column.toString();
  }
  sendError(text);
  unreachable();
}

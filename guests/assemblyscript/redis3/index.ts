// redis3: operation main GETs some_key1..some_key3 through the host's redis namespace and
// answers the three values joined, as in the original benchmark. A failed host call is the
// guest's error.
import { hostCall, register, Result } from "../guest";
export { __guest_call } from "../guest";

const KEYS: string[] = ["some_key1", "some_key2", "some_key3"];

function redis3(payload: ArrayBuffer): Result {
  const values = new Array<ArrayBuffer>(KEYS.length);
  let total = 0;
  for (let i = 0; i < KEYS.length; i++) {
    const r = hostCall("", "redis", "GET", String.UTF8.encode(KEYS[i]));
    if (!r.isOk) return r;
    values[i] = r.data;
    total += r.data.byteLength;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (let i = 0; i < values.length; i++) {
    out.set(Uint8Array.wrap(values[i]), at);
    at += values[i].byteLength;
  }
  return Result.ok(out.buffer);
}

register("main", redis3);

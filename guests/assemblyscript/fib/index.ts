// fib: operation main, payload ASCII decimal n, answers fib(n) computed the slow recursive way.
import { register, Result } from "../guest";
export { __guest_call } from "../guest";

function fib(n: u64): u64 {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

function parseDecimal(text: string): i64 {
  const s = text.trim();
  if (s.length == 0 || s.length > 19) return -1;
  let n: i64 = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return n;
}

function fibHandler(payload: ArrayBuffer): Result {
  const text = String.UTF8.decode(payload);
  const n = parseDecimal(text);
  if (n < 0) return Result.err("invalid number: " + text);
  return Result.text(fib(<u64>n).toString());
}

register("main", fibHandler);

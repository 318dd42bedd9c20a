;; wasi_unstable: a guest built against WASI's first snapshot (as TinyGo's are): it imports
;; fd_write, clock_time_get and random_get from `wasi_unstable`. Every call writes its payload
;; to stdout (fd 1), reads the realtime clock and fills 8 bytes with random_get, and answers
;; 16 bytes as little-endian i32: fd_write's errno, the bytes it wrote, clock_time_get's
;; errno, random_get's errno.
(module
  (import "wasi_unstable" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_unstable" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wasi_unstable" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))

  (memory (export "memory") 1)
  ;; 0: answer (16 bytes); 16: iovec {ptr, len}; 24: nwritten; 32: timestamp; 40: random;
  ;; 256: op; 1024: payload

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (call $guest_request (i32.const 256) (i32.const 1024))
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (local.get $msg_len))
    (i32.store (i32.const 0)
      (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i32.store (i32.const 4) (i32.load (i32.const 24)))
    (i32.store (i32.const 8)
      (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 32)))
    (i32.store (i32.const 12) (call $random_get (i32.const 40) (i32.const 8)))
    (call $guest_response (i32.const 0) (i32.const 16))
    (i32.const 1))
)

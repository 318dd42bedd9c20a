;; hostcall_n: every operation makes N host calls host/echo("hello"), N being the payload in
;; ASCII decimal (empty = 0), reading each response back as a waPC guest does
;; (__host_response_len, __host_response); then it answers the payload. A failed host call, or
;; a response other than "hello", ends the call with a guest error. scripts/bench_hostcall.py
;; times it with N = 0 and N = 100: the difference is the cost of 100 host calls.
;; Memory layout as in echo.wat.
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))

  (memory (export "memory") 2)

  (data (i32.const 0) "host")
  (data (i32.const 16) "echo")
  (data (i32.const 32) "hello")
  (data (i32.const 64) "payload too long")        ;; 16 bytes
  (data (i32.const 96) "operation name too long") ;; 23 bytes
  (data (i32.const 128) "payload must be ASCII digits") ;; 28 bytes
  (data (i32.const 160) "host call failed")       ;; 16 bytes
  (data (i32.const 192) "wrong host response")    ;; 19 bytes

  (func $fail (param $ptr i32) (param $len i32) (result i32)
    (call $guest_error (local.get $ptr) (local.get $len))
    (i32.const 0))

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (local $n i32) (local $p i32) (local $end i32) (local $c i32)
    (if (i32.gt_u (local.get $op_len) (i32.const 64512))
      (then (return (call $fail (i32.const 96) (i32.const 23)))))
    ;; N fits in 9 digits; the payload stays inside the initial two pages.
    (if (i32.gt_u (local.get $msg_len) (i32.const 9))
      (then (return (call $fail (i32.const 64) (i32.const 16)))))
    (call $guest_request (i32.const 1024) (i32.const 65536))

    (local.set $p (i32.const 65536))
    (local.set $end (i32.add (i32.const 65536) (local.get $msg_len)))
    (block $parsed
      (loop $digit
        (br_if $parsed (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $c (i32.sub (i32.load8_u (local.get $p)) (i32.const 48)))
        (if (i32.gt_u (local.get $c) (i32.const 9))
          (then (return (call $fail (i32.const 128) (i32.const 28)))))
        (local.set $n (i32.add (i32.mul (local.get $n) (i32.const 10)) (local.get $c)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $digit)))

    (block $done
      (loop $call
        (br_if $done (i32.eqz (local.get $n)))
        (if (i32.eqz (call $host_call (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 4)
                                      (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 5)))
          (then (return (call $fail (i32.const 160) (i32.const 16)))))
        (if (i32.ne (call $host_response_len) (i32.const 5))
          (then (return (call $fail (i32.const 192) (i32.const 19)))))
        (call $host_response (i32.const 32768))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $call)))

    (call $guest_response (i32.const 65536) (local.get $msg_len))
    (i32.const 1))
)

;; wasi_sleep: calls WASI poll_oneoff directly, as std::thread::sleep (Rust) and time.Sleep (Go)
;; do. Operations:
;;   sleep      payload = milliseconds in ASCII decimal; one relative monotonic clock
;;              subscription; answers the payload, or the guest error "poll_oneoff failed"
;;   sleep_abs  the same with an absolute deadline: clock_time_get(monotonic) + the payload
;;   poll       payload = nsubscriptions (u32, little-endian) followed by the subscriptions
;;              (48 bytes each, at most 1,333; the count may say more); answers errno (u32),
;;              nevents (u32) and the nevents events (32 bytes each) that poll_oneoff wrote
;; Any other operation is the guest error "unknown operation".
;;
;; Memory layout (two pages): 0 .. 511 constant strings; the operation name at 512 (at most
;; 256 bytes); the payload at 1020 (at most 64,000 bytes), so that the subscriptions of "poll"
;; start at 1024 (8-aligned); clock_time_get's answer at 65520; the subscription of the sleeps
;; at 65536; the answer at 65600: errno, nevents, then the events from 65608 (8-aligned).
(module
  (import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock_time_get (param i32 i64 i32) (result i32)))
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))

  (memory (export "memory") 2)

  (data (i32.const 0) "sleep")
  (data (i32.const 16) "sleep_abs")
  (data (i32.const 32) "poll")
  (data (i32.const 64) "unknown operation")      ;; 17 bytes
  (data (i32.const 96) "poll_oneoff failed")     ;; 18 bytes
  (data (i32.const 128) "request too long")      ;; 16 bytes

  (func $fail (param $ptr i32) (param $len i32) (result i32)
    (call $guest_error (local.get $ptr) (local.get $len))
    (i32.const 0))

  ;; 1 when the operation (at 512, $len bytes) equals the $n bytes at $s.
  (func $is (param $len i32) (param $s i32) (param $n i32) (result i32)
    (local $i i32)
    (if (i32.ne (local.get $len) (local.get $n)) (then (return (i32.const 0))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (if (i32.ne (i32.load8_u (i32.add (i32.const 512) (local.get $i)))
                    (i32.load8_u (i32.add (local.get $s) (local.get $i))))
          (then (return (i32.const 0))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.const 1))

  ;; The payload (at 1020, $len bytes) as an ASCII decimal number.
  (func $number (param $len i32) (result i64)
    (local $i i32) (local $n i64)
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $n
          (i64.add (i64.mul (local.get $n) (i64.const 10))
                   (i64.extend_i32_u
                     (i32.sub (i32.load8_u (i32.add (i32.const 1020) (local.get $i)))
                              (i32.const 48)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; One clock subscription at 65536: userdata 42, monotonic, $timeout ns, the given flags;
  ;; poll_oneoff with the event at 65608. Answers the payload, or a guest error.
  (func $sleep (param $timeout i64) (param $flags i32) (param $len i32) (result i32)
    (i64.store (i32.const 65536) (i64.const 42))        ;; userdata
    (i32.store (i32.const 65544) (i32.const 0))         ;; tag: clock
    (i32.store (i32.const 65552) (i32.const 1))         ;; clock id: monotonic
    (i64.store (i32.const 65560) (local.get $timeout))  ;; timeout
    (i64.store (i32.const 65568) (i64.const 0))         ;; precision
    (i32.store (i32.const 65576) (local.get $flags))    ;; flags (u16) and padding
    (if (i32.or
          (call $poll_oneoff (i32.const 65536) (i32.const 65608) (i32.const 1) (i32.const 65604))
          (i32.ne (i32.load (i32.const 65604)) (i32.const 1)))
      (then (return (call $fail (i32.const 96) (i32.const 18)))))
    (call $guest_response (i32.const 1020) (local.get $len))
    (i32.const 1))

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (local $errno i32)
    (if (i32.or (i32.gt_u (local.get $op_len) (i32.const 256))
                (i32.gt_u (local.get $msg_len) (i32.const 64000)))
      (then (return (call $fail (i32.const 128) (i32.const 16)))))
    (call $guest_request (i32.const 512) (i32.const 1020))
    (if (call $is (local.get $op_len) (i32.const 0) (i32.const 5))
      (then
        (return (call $sleep
          (i64.mul (call $number (local.get $msg_len)) (i64.const 1000000))
          (i32.const 0) (local.get $msg_len)))))
    (if (call $is (local.get $op_len) (i32.const 16) (i32.const 9))
      (then
        (if (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 65520))
          (then (return (call $fail (i32.const 96) (i32.const 18)))))
        (return (call $sleep
          (i64.add (i64.load (i32.const 65520))
                   (i64.mul (call $number (local.get $msg_len)) (i64.const 1000000)))
          (i32.const 1) (local.get $msg_len)))))
    (if (call $is (local.get $op_len) (i32.const 32) (i32.const 4))
      (then
        (i32.store (i32.const 65604) (i32.const 0))
        (local.set $errno
          (call $poll_oneoff
            (i32.const 1024) (i32.const 65608) (i32.load (i32.const 1020)) (i32.const 65604)))
        (i32.store (i32.const 65600) (local.get $errno))
        (if (local.get $errno) (then (i32.store (i32.const 65604) (i32.const 0))))
        (call $guest_response
          (i32.const 65600)
          (i32.add (i32.const 8) (i32.shl (i32.load (i32.const 65604)) (i32.const 5))))
        (return (i32.const 1))))
    (call $fail (i32.const 64) (i32.const 17)))
)

;; spin_echo: computes about a millisecond, calls host/echo, and repeats: a guest that is
;; CPU-bound between host calls. The payload is an ASCII decimal R, the number of rounds
;; (0: no end, until a limit stops the call); a round is 500,000 iterations of a linear
;; congruential generator over a global (about 0.5 ms here) followed by host/echo("spin"). A
;; failed host call is the guest error "host call failed"; after R rounds it answers "done".
;; Memory layout as in echo.wat.
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 2)
  (global $state (mut i32) (i32.const 1))

  (data (i32.const 0) "done")
  (data (i32.const 8) "host")
  (data (i32.const 16) "echo")
  (data (i32.const 24) "spin")
  (data (i32.const 32) "host call failed")       ;; 16 bytes
  (data (i32.const 64) "request too long")       ;; 16 bytes

  (func $fail (param $ptr i32) (param $len i32) (result i32)
    (call $guest_error (local.get $ptr) (local.get $len))
    (i32.const 0))

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (local $rounds i32) (local $i i32) (local $left i32)
    (if (i32.or (i32.gt_u (local.get $op_len) (i32.const 64512))
                (i32.gt_u (local.get $msg_len) (i32.const 16)))
      (then (return (call $fail (i32.const 64) (i32.const 16)))))
    (call $guest_request (i32.const 1024) (i32.const 65536))
    (block $parsed
      (loop $digit
        (br_if $parsed (i32.ge_u (local.get $i) (local.get $msg_len)))
        (local.set $rounds
          (i32.add (i32.mul (local.get $rounds) (i32.const 10))
                   (i32.sub (i32.load8_u (i32.add (i32.const 65536) (local.get $i)))
                            (i32.const 48))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digit)))
    (local.set $i (i32.const 0))
    (block $finished
      (loop $round
        (br_if $finished (i32.and (i32.ne (local.get $rounds) (i32.const 0))
                                  (i32.ge_u (local.get $i) (local.get $rounds))))
        (local.set $left (i32.const 500000))
        (loop $spin
          (global.set $state
            (i32.add (i32.mul (global.get $state) (i32.const 1103515245)) (i32.const 12345)))
          (br_if $spin (local.tee $left (i32.sub (local.get $left) (i32.const 1)))))
        (if (i32.eqz (call $host_call (i32.const 0) (i32.const 0) (i32.const 8) (i32.const 4)
                                      (i32.const 16) (i32.const 4) (i32.const 24) (i32.const 4)))
          (then (return (call $fail (i32.const 32) (i32.const 16)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $round)))
    (call $guest_response (i32.const 0) (i32.const 4))
    (i32.const 1))
)

;; wasi_random: fills memory with WASI random_get. Operation "main": the payload is an ASCII
;; decimal N; grows the memory to hold N bytes at 65536, calls random_get(65536, N) and
;; answers the last min(N, 64) bytes it wrote (or the guest error "random_get failed").
;; Operation "oob": random_get on a buffer past the end of the memory (the guest traps).
;; Memory layout as in echo.wat.
(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))

  (memory (export "memory") 2)

  (data (i32.const 0) "oob")
  (data (i32.const 64) "out of memory")          ;; 13 bytes
  (data (i32.const 96) "operation name too long") ;; 23 bytes
  (data (i32.const 128) "random_get failed")     ;; 17 bytes

  ;; $ensure (grow memory to cover an address), $fail (set a guest error): as in echo.wat.
  (func $ensure (param $end i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.add (i32.shr_u (local.get $end) (i32.const 16))
               (i32.ne (i32.and (local.get $end) (i32.const 0xffff)) (i32.const 0))))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then
        (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
          (then (return (i32.const 0))))))
    (i32.const 1))

  (func $fail (param $ptr i32) (param $len i32) (result i32)
    (call $guest_error (local.get $ptr) (local.get $len))
    (i32.const 0))

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (local $i i32) (local $n i32) (local $last i32)
    (if (i32.gt_u (local.get $op_len) (i32.const 64512))
      (then (return (call $fail (i32.const 96) (i32.const 23)))))
    (if (i32.eqz (call $ensure (i32.add (i32.const 65536) (local.get $msg_len))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (call $guest_request (i32.const 1024) (i32.const 65536))
    (if (i32.and (i32.eq (local.get $op_len) (i32.const 3))
                 (i32.eq (i32.load16_u (i32.const 1024)) (i32.load16_u (i32.const 0))))
      (then
        (drop (call $random_get (i32.const 65536) (i32.const 0x7fff0000)))
        (return (i32.const 1))))
    ;; N from the payload's ASCII digits
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $msg_len)))
        (local.set $n
          (i32.add (i32.mul (local.get $n) (i32.const 10))
                   (i32.sub (i32.load8_u (i32.add (i32.const 65536) (local.get $i)))
                            (i32.const 48))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (if (i32.eqz (call $ensure (i32.add (i32.const 65536) (local.get $n))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (if (call $random_get (i32.const 65536) (local.get $n))
      (then (return (call $fail (i32.const 128) (i32.const 17)))))
    (local.set $last (select (local.get $n) (i32.const 64) (i32.lt_u (local.get $n) (i32.const 64))))
    (call $guest_response
      (i32.sub (i32.add (i32.const 65536) (local.get $n)) (local.get $last)) (local.get $last))
    (i32.const 1))
)

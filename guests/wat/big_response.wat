;; big_response: the payload is an ASCII decimal N; every call answers N bytes, all "x".
;; Memory grows as needed (the response is written from address 65536 on).
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))

  (memory (export "memory") 2)

  (data (i32.const 16) "payload must be a decimal number") ;; 32 bytes
  (data (i32.const 48) "response too large")     ;; 18 bytes
  (data (i32.const 64) "out of memory")          ;; 13 bytes
  (data (i32.const 96) "operation name too long") ;; 23 bytes

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

  ;; The value of the $len ASCII digits at $p (1 to 18 of them), or -1.
  (func $atoi (param $p i32) (param $len i32) (result i64)
    (local $n i64) (local $digit i32)
    (if (i32.or (i32.eqz (local.get $len)) (i32.gt_u (local.get $len) (i32.const 18)))
      (then (return (i64.const -1))))
    (loop $next
      (local.set $digit (i32.sub (i32.load8_u (local.get $p)) (i32.const 0x30)))
      (if (i32.gt_u (local.get $digit) (i32.const 9)) (then (return (i64.const -1))))
      (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 10))
                             (i64.extend_i32_u (local.get $digit))))
      (local.set $p (i32.add (local.get $p) (i32.const 1)))
      (br_if $next (local.tee $len (i32.sub (local.get $len) (i32.const 1)))))
    (local.get $n))

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (local $n i64)
    (if (i32.gt_u (local.get $op_len) (i32.const 64512))
      (then (return (call $fail (i32.const 96) (i32.const 23)))))
    (if (i32.eqz (call $ensure (i32.add (i32.const 65536) (local.get $msg_len))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (call $guest_request (i32.const 1024) (i32.const 65536))
    (local.set $n (call $atoi (i32.const 65536) (local.get $msg_len)))
    (if (i64.lt_s (local.get $n) (i64.const 0))
      (then (return (call $fail (i32.const 16) (i32.const 32)))))
    ;; the response must fit in a 4 GiB memory after the first 64 KiB
    (if (i64.gt_u (local.get $n) (i64.const 0xfffe0000))
      (then (return (call $fail (i32.const 48) (i32.const 18)))))
    (if (i32.eqz (call $ensure (i32.add (i32.const 65536) (i32.wrap_i64 (local.get $n)))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (memory.fill (i32.const 65536) (i32.const 0x78) (i32.wrap_i64 (local.get $n)))
    (call $guest_response (i32.const 65536) (i32.wrap_i64 (local.get $n)))
    (i32.const 1))
)

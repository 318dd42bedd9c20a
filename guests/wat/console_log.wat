;; console_log: every call logs the payload with __console_log, then logs "second line", and
;; answers "logged". Memory layout as in echo.wat.
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__console_log" (func $console_log (param i32 i32)))

  (memory (export "memory") 2)

  (data (i32.const 0) "second line")             ;; 11 bytes
  (data (i32.const 16) "logged")                 ;; 6 bytes
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

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (if (i32.gt_u (local.get $op_len) (i32.const 64512))
      (then (return (call $fail (i32.const 96) (i32.const 23)))))
    (if (i32.eqz (call $ensure (i32.add (i32.const 65536) (local.get $msg_len))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (call $guest_request (i32.const 1024) (i32.const 65536))
    (call $console_log (i32.const 65536) (local.get $msg_len))
    (call $console_log (i32.const 0) (i32.const 11))
    (call $guest_response (i32.const 16) (i32.const 6))
    (i32.const 1))
)

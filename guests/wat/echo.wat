;; echo: ops "echo" and "main" answer the payload unchanged; any other op is a guest error
;; "unknown operation: <op>".
;;
;; Memory layout shared by the test guests in this folder:
;;   0 .. 1023       constant strings (data segments)
;;   1024 .. 65535   the operation name, written by __guest_request
;;   65536 ..        the payload, written by __guest_request; scratch space follows it
;; Memory grows (memory.grow) so that payloads of several MiB fit.
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))

  (memory (export "memory") 2)

  (data (i32.const 0) "echo")
  (data (i32.const 16) "main")
  (data (i32.const 32) "unknown operation: ")    ;; 19 bytes
  (data (i32.const 64) "out of memory")          ;; 13 bytes
  (data (i32.const 96) "operation name too long") ;; 23 bytes

  ;; Grow memory so that every address below $end is valid. 1 ok, 0 if memory.grow failed.
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

  ;; Set a guest error from a constant string and return 0.
  (func $fail (param $ptr i32) (param $len i32) (result i32)
    (call $guest_error (local.get $ptr) (local.get $len))
    (i32.const 0))

  ;; 1 when the $len bytes at $a and $b are equal.
  (func $eq (param $a i32) (param $b i32) (param $len i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $len)) (then (return (i32.const 1))))
        (br_if $differ (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $len (i32.sub (local.get $len) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (local $at i32)
    (if (i32.gt_u (local.get $op_len) (i32.const 64512))
      (then (return (call $fail (i32.const 96) (i32.const 23)))))
    (if (i32.eqz (call $ensure (i32.add (i32.const 65536) (local.get $msg_len))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (call $guest_request (i32.const 1024) (i32.const 65536))

    (if (i32.and (i32.eq (local.get $op_len) (i32.const 4))
                 (i32.or (call $eq (i32.const 1024) (i32.const 0) (i32.const 4))
                         (call $eq (i32.const 1024) (i32.const 16) (i32.const 4))))
      (then
        (call $guest_response (i32.const 65536) (local.get $msg_len))
        (return (i32.const 1))))

    ;; "unknown operation: " ++ op, built just after the payload
    (local.set $at (i32.add (i32.const 65536) (local.get $msg_len)))
    (if (i32.eqz
          (call $ensure (i32.add (local.get $at) (i32.add (i32.const 19) (local.get $op_len)))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (memory.copy (local.get $at) (i32.const 32) (i32.const 19))
    (memory.copy (i32.add (local.get $at) (i32.const 19)) (i32.const 1024) (local.get $op_len))
    (call $fail (local.get $at) (i32.add (i32.const 19) (local.get $op_len))))
)

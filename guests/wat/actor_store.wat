;; actor_store: every call stores its payload as the actor's state (binding "", namespace
;; "actor", operation "store") and answers the host's (empty) response; if the host call fails,
;; the host's error text becomes the guest error: a test of --actor-state-max, whose limit the
;; tiny state of the counter examples never reaches. Memory layout as in echo.wat.
(module
  (import "wapc" "__guest_request" (func $guest_request (param i32 i32)))
  (import "wapc" "__guest_response" (func $guest_response (param i32 i32)))
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))

  (memory (export "memory") 2)

  (data (i32.const 0) "actor")
  (data (i32.const 16) "store")
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

  ;; After __host_call returned $ok: copy the host response (or error) to $at and answer it.
  (func $answer_host (param $ok i32) (param $at i32) (result i32)
    (local $len i32)
    (if (local.get $ok)
      (then
        (local.set $len (call $host_response_len))
        (if (i32.eqz (call $ensure (i32.add (local.get $at) (local.get $len))))
          (then (return (call $fail (i32.const 64) (i32.const 13)))))
        (call $host_response (local.get $at))
        (call $guest_response (local.get $at) (local.get $len))
        (return (i32.const 1))))
    (local.set $len (call $host_error_len))
    (if (i32.eqz (call $ensure (i32.add (local.get $at) (local.get $len))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (call $host_error (local.get $at))
    (call $fail (local.get $at) (local.get $len)))

  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (if (i32.gt_u (local.get $op_len) (i32.const 64512))
      (then (return (call $fail (i32.const 96) (i32.const 23)))))
    (if (i32.eqz (call $ensure (i32.add (i32.const 65536) (local.get $msg_len))))
      (then (return (call $fail (i32.const 64) (i32.const 13)))))
    (call $guest_request (i32.const 1024) (i32.const 65536))
    (call $answer_host
      (call $host_call
        (i32.const 0) (i32.const 0)     ;; binding ""
        (i32.const 0) (i32.const 5)     ;; namespace "actor"
        (i32.const 16) (i32.const 5)    ;; operation "store"
        (i32.const 65536) (local.get $msg_len))
      (i32.add (i32.const 65536) (local.get $msg_len))))
)

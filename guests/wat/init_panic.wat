;; init_panic: its wapc_init panics the way the SDKs report it: sends "registration failed"
;; through __guest_error, then executes `unreachable`. No instance of it ever starts.
(module
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "registration failed") ;; 19 bytes
  (func (export "wapc_init")
    (call $guest_error (i32.const 0) (i32.const 19))
    (unreachable))
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (i32.const 1))
)

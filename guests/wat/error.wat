;; error: every call fails with the guest error "something went wrong".
(module
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "something went wrong") ;; 20 bytes
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (call $guest_error (i32.const 0) (i32.const 20))
    (i32.const 0))
)

;; panic: every call does what the Rust, AssemblyScript and Zig SDKs do on a panic: sends the
;; panic's message through __guest_error ("panicked at 'boom', src/lib.rs:7:5"), then executes
;; `unreachable`.
(module
  (import "wapc" "__guest_error" (func $guest_error (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "panicked at 'boom', src/lib.rs:7:5") ;; 34 bytes
  (func (export "__guest_call") (param $op_len i32) (param $msg_len i32) (result i32)
    (call $guest_error (i32.const 0) (i32.const 34))
    (unreachable))
)

;; hostcall_flood: calls host/echo in a loop forever, ignoring the outcome.
(module
  (import "wapc" "__host_call"
    (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "host")
  (data (i32.const 16) "echo")
  (func (export "__guest_call") (param i32 i32) (result i32)
    (loop $forever
      (drop (call $host_call (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 4)
                             (i32.const 16) (i32.const 4) (i32.const 32) (i32.const 8)))
      (br $forever))
    (i32.const 1)))

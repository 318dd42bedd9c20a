;; stack_overflow: unbounded recursion; the host must turn the stack overflow into a trap.
(module
  (memory (export "memory") 1)
  (func $deep (param $n i64) (result i64)
    (i64.add (call $deep (i64.add (local.get $n) (i64.const 1))) (i64.const 1)))
  (func (export "__guest_call") (param i32 i32) (result i32)
    (drop (call $deep (i64.const 0)))
    (i32.const 1)))

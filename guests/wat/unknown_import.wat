;; Invalid for deploy: imports wapc.__not_a_thing, which no host offers.
(module
  (import "wapc" "__not_a_thing" (func (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "__guest_call") (param i32 i32) (result i32)
    (i32.const 1))
)

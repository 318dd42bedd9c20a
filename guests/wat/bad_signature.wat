;; Invalid for deploy: imports wapc.__guest_response with the wrong type (an i64 parameter
;; instead of two i32).
(module
  (import "wapc" "__guest_response" (func (param i64)))
  (memory (export "memory") 1)
  (func (export "__guest_call") (param i32 i32) (result i32)
    (i32.const 1))
)

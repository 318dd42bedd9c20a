;; Invalid for deploy: exports __guest_call but has no memory.
(module
  (func (export "__guest_call") (param i32 i32) (result i32)
    (i32.const 1))
)

;; start_loop: an infinite loop in _start; instances of it can never start.
(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever)))
  (func (export "__guest_call") (param i32 i32) (result i32) (i32.const 1)))
